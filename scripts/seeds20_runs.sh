#!/usr/bin/env bash
# The 20-seed paper-scale runs behind docs/RESULTS.md's "Both presets, 20 seeds" (issue 19): every
# paper claim at both meta-optimiser presets (--preset robust, the default, and --preset paper),
# one vmapped program per run, the pool λ sweep as one-program sweeps (--l1 0.1,1,10,100). Each
# run is checkpointed every 25 episodes; running this script again resumes an unfinished run and
# skips a finished one (summary.json without "stopped"), so a killed session loses at most 25
# episodes. Usage:
#
#   bash scripts/seeds20_runs.sh [GROUP ...]   # groups: check rules pool best ; default: all, in that order
#   PRESETS="robust" RUNS=runs/seeds20 bash scripts/seeds20_runs.sh rules
#   DRY_RUN=1 bash scripts/seeds20_runs.sh     # print the commands, run nothing
#
# Every run: the offline 47-class glyphs data, 10 classes held out (--holdout 0.21, split seed 0),
# network 784-170-130-100-70-47, M = 5, K = 50, Q = 10, θ0 = 1e-3, 600 episodes, --max-skips 0
# (a member is never the reason to stop the others). Wall time and the load average at start and end
# are appended to RUN_DIR/wall_seconds.txt. CPU=1 pins the runs to core 1 (taskset), leaving core 0.
#
# Across sessions: `bash scripts/seeds20_archive.sh save` packs the runs' state (configs, records,
# checkpoints) into runs-archive/seeds20.tar.gz, committed; `... restore` unpacks it into $RUNS before
# this script resumes the runs. FREEZE=1 runs them on a frozen copy of the committed package
# (runs/code-<commit>, first on PYTHONPATH) so that edits to the working tree never reach a run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/seeds20}
PRESETS=${PRESETS:-robust paper}
groups=("$@")
[[ ${#groups[@]} -eq 0 ]] && groups=(check rules pool best)
COMMON=(--dataset glyphs --holdout 0.21 --M 5 --K 50 --Q 10 --analysis-every 10 --checkpoint-every 25
        --max-skips 0 --no-progress)
source scripts/runs_lib.sh  # run(), the CPU pin and the frozen code copy

for g in "${groups[@]}"; do
  for p in $PRESETS; do
    case $g in
      check)  # the issue's acceptance runs at default settings: every seed must learn
        [[ $p == robust ]] || continue
        run check-bio-fa --rule bio --feedback fa --seeds 8 --episodes 150
        run check-pool-fa-elementwise-l1_1 --rule pool --feedback fa --f5-f8 elementwise --l1 1 --seeds 5 \
          --episodes 100 ;;
      rules)
        for r in f0-bp f0-fa bio-fa ehebb-fa oja-fa; do
          run "$p/$r" --preset "$p" --rule "${r%-*}" --feedback "${r#*-}" --seeds 20 --episodes 600
        done ;;
      pool)  # the λ sweep, both readings of F5-F8, 10 seeds, one program each
        for reading in elementwise matrix; do
          run "$p/pool-fa-$reading-sweep" --preset "$p" --rule pool --feedback fa --f5-f8 "$reading" \
            --l1 0.1,1,10,100 --seeds 10 --episodes 600
        done ;;
      best)  # 10 more seeds of the best pool settings so far (element-wise λ = 0.1; docs/RESULTS.md)
        run "$p/pool-fa-elementwise-l1_0.1-s10" --preset "$p" --rule pool --feedback fa --f5-f8 elementwise \
          --l1 0.1 --seed 10 --seeds 10 --episodes 600 ;;
      *) echo "unknown group $g (check rules pool best)" >&2; exit 2 ;;
    esac
  done
done
