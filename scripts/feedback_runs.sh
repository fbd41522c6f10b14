#!/usr/bin/env bash
# The feedback-pathway meta-training runs behind docs/RESULTS.md ("Feedback pathways"): the rules
# {f0, bio} × the feedback modes {bp, fa, dfa, sign, kp, plastic, routing} (docs/METHOD.md §9), one
# after another, each checkpointed every 25 episodes and resumed where it stopped when this script is
# run again (a finished run is skipped; a directory holding a run of other settings is left alone
# and named). A thin wrapper over `scripts/feedback_pathways.py --train-only`, which holds the flags:
# the offline 47-class glyphs data, 10 classes held out (--holdout 0.21), 784-170-130-100-70-47,
# M = 5, K = 50, Q = 10, Adam 1e-3, θ0 = 1e-3, EPISODES episodes, SEEDS seeds vmapped, into
# RUNS/<rule>-<mode>, each invocation's wall time appended to RUN_DIR/wall_seconds.txt. Usage:
#
#   bash scripts/feedback_runs.sh                          # every run
#   RULES=f0 MODES=kp,plastic bash scripts/feedback_runs.sh
#   RUNS=runs/feedback SEEDS=3 EPISODES=300 bash scripts/feedback_runs.sh
#   DRY_RUN=1 bash scripts/feedback_runs.sh                # print what would start or resume
#
# Then: .venv/bin/python scripts/feedback_pathways.py --report-only (same RUNS, SEEDS, EPISODES flags).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
dry=()
[[ -n ${DRY_RUN:-} ]] && dry=(--dry-run)
exec "$PY" scripts/feedback_pathways.py --train-only --runs "${RUNS:-runs/feedback}" --seeds "${SEEDS:-3}" \
  --episodes "${EPISODES:-300}" --rules "${RULES:-f0,bio}" --modes "${MODES:-bp,fa,dfa,sign,kp,plastic,routing}" \
  "${dry[@]}" "$@"
