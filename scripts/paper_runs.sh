#!/usr/bin/env bash
# The paper-scale meta-training runs behind docs/RESULTS.md ("At the paper's scale"), one after
# another, each checkpointed every 25 episodes and resumed where it stopped when this script is
# run again (a finished run is skipped; a directory holding a run of other settings is left alone
# and named). The run matrix (names, flags, groups) lives in scripts/reproduce.py (`paper_matrix`);
# this is a thin wrapper over `reproduce.py --scale paper --train-only`. Usage:
#
#   bash scripts/paper_runs.sh [GROUP ...]     # groups: fig3 rules table1 pool ; default: all
#   RUNS=runs/paper SEEDS=5 EPISODES=600 bash scripts/paper_runs.sh fig3
#   READINGS=matrix POOL_L1="1 10" POOL_VARIANTS="base lr_1e-4 clip_10" bash scripts/paper_runs.sh pool
#   DRY_RUN=1 bash scripts/paper_runs.sh       # print what would start or resume, run nothing
#
# Every run: the offline 47-class `glyphs` data, 10 of the 47 classes held out for meta-test
# (--holdout 0.21, split seed 0), network 784-170-130-100-70-47 (Table 1: 784-130-70-47),
# M = 5, K = 50, Q = 10, Adam 1e-3, θ0 = 1e-3, SEEDS seeds vmapped, EPISODES episodes. Each run is
# `plastic-jax meta-train` ($PJ when set, else $PY -m plastic_jax.cli), its wall time appended to
# RUN_DIR/wall_seconds.txt. Pool variants: base, lr_X (--meta-lr X), clip_X (--meta-clip X), or
# +-joined (lr_1e-4+clip_10); a variant other than base adds "-lr_1e-4-clip_10" to the run's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
groups=("$@")
[[ ${#groups[@]} -eq 0 ]] && groups=(fig3 rules table1 pool)
for g in "${groups[@]}"; do
  case $g in
    fig3|rules|table1|pool) ;;
    *) echo "unknown group $g (fig3 rules table1 pool)" >&2; exit 2 ;;
  esac
done
only=$(IFS=,; echo "${groups[*]}")
dry=()
[[ -n ${DRY_RUN:-} ]] && dry=(--dry-run)
exec "$PY" scripts/reproduce.py --scale paper --train-only --only "$only" \
  --runs "${RUNS:-runs/paper}" --seeds "${SEEDS:-5}" --episodes "${EPISODES:-600}" \
  --pool-l1 "${POOL_L1:-1 10 0.1 100}" --readings "${READINGS:-matrix elementwise}" \
  --pool-variants "${POOL_VARIANTS:-base}" "${dry[@]}"
