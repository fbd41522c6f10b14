"""Run ``plastic-jax meta-train`` with each episode slowed by ``DELAY`` seconds (so a test can
signal it mid-run): ``python _slow_run.py DELAY <meta-train args>``; exits with main's code."""

import sys
import time

import plastic_jax.train as train
from plastic_jax.cli import main

delay = float(sys.argv[1])
_episode_keys = train.episode_keys


def episode_keys(base, episode):
    time.sleep(delay)
    return _episode_keys(base, episode)


train.episode_keys = episode_keys
sys.exit(main(["meta-train", *sys.argv[2:]]))
