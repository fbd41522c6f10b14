#!/usr/bin/env bash
# The experiment of issue 23 ("Chaos-aware meta-gradients"): at the paper's meta-optimiser (--preset
# paper: Adam 1e-3, no clipping, the skip guard), does the smoothed meta-gradient (--meta-grad es:
# antithetic evolution strategies over Θ) keep every seed, and does it let pool's matrix reading
# learn? The exact-gradient runs it is compared with, on the same seeds (0-9) and the same tasks, are
# scripts/seeds20_runs.sh's runs/seeds20/paper/bio-fa (exact, no clipping), runs/seeds20/robust/bio-fa
# (exact, relative clipping and rollback) and the pool-fa-matrix-sweep runs of both presets. Same
# network, data and episode as there. Each run is checkpointed every 25 episodes; running this script
# again resumes an unfinished run and skips a finished one. Usage:
#
#   bash scripts/chaos_runs.sh [GROUP ...]   # groups: bio pool ; default: both, in that order
#   DRY_RUN=1 bash scripts/chaos_runs.sh     # print the commands, run nothing
#   CPU=0 FREEZE=1 bash scripts/chaos_runs.sh  # pinned to core 0, on a frozen copy of the committed code
#
# Across sessions: RUNS=runs/chaos ARCHIVE=runs-archive/chaos.tar.gz bash scripts/seeds20_archive.sh
# save|restore. Cost: es is 2P + 1 = 17 forward episodes per meta-step (docs/PERFORMANCE.md), about
# 0.35 s of CPU per seed and episode on the paper's network, so bio 10 × 600 is ~35 min of one core
# and the pool sweep (two λ) ~70 min.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/chaos}
groups=("$@")
[[ ${#groups[@]} -eq 0 ]] && groups=(bio pool)
COMMON=(--dataset glyphs --holdout 0.21 --M 5 --K 50 --Q 10 --analysis-every 10 --checkpoint-every 25
        --max-skips 0 --no-progress --preset paper --meta-grad es --seeds 10 --episodes 600)
source scripts/runs_lib.sh  # run(), the CPU pin and the frozen code copy

for g in "${groups[@]}"; do
  case $g in
    bio)  run paper-es/bio-fa --rule bio --feedback fa ;;
    pool) run paper-es/pool-fa-matrix-sweep --rule pool --feedback fa --f5-f8 matrix --l1 0.1,1 ;;
    *) echo "unknown group $g (bio pool)" >&2; exit 2 ;;
  esac
done
