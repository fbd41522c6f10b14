"""Run ``plastic-jax meta-train`` and SIGKILL this very process when episode ``KILL_AT`` starts.

Used by test_checkpoint.py: ``python _kill_at.py KILL_AT <meta-train args>``. The kill is a
real SIGKILL (no cleanup, no flush), placed deterministically between two checkpoints.
"""

import os
import signal
import sys

import plastic_jax.train as train
from plastic_jax.cli import main

kill_at = int(sys.argv[1])
_episode_keys = train.episode_keys


def episode_keys(base, episode):
    if episode == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return _episode_keys(base, episode)


train.episode_keys = episode_keys
sys.exit(main(["meta-train", *sys.argv[2:]]))
