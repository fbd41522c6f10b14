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
PJ=${PJ:-.venv/bin/plastic-jax}
if [[ -n ${FREEZE:-} ]]; then
  rev=$(git rev-parse --short HEAD)
  [[ -d runs/code-$rev ]] || { mkdir -p "runs/code-$rev" && git archive HEAD plastic_jax | tar -x -C "runs/code-$rev"; }
  export PYTHONPATH=$PWD/runs/code-$rev
  echo "# frozen code: runs/code-$rev"
fi
RUNS=${RUNS:-runs/chaos}
groups=("$@")
[[ ${#groups[@]} -eq 0 ]] && groups=(bio pool)
COMMON=(--dataset glyphs --holdout 0.21 --M 5 --K 50 --Q 10 --analysis-every 10 --checkpoint-every 25
        --max-skips 0 --no-progress --preset paper --meta-grad es --seeds 10 --episodes 600)
pin=()
[[ -n ${CPU:-} ]] && pin=(taskset -c "$CPU")

run() {  # run NAME FLAGS...: start, resume or skip RUNS/NAME
  local name=$1; shift
  local out=$RUNS/$name
  if [[ -f $out/summary.json ]] && ! grep -q '"stopped"' "$out/summary.json"; then
    echo "done: $out"; return 0
  fi
  local cmd
  if [[ -f $out/config.json ]]; then cmd=("${pin[@]}" "$PJ" meta-train --resume "$out" --no-progress)
  else cmd=("${pin[@]}" "$PJ" meta-train "${COMMON[@]}" "$@" --out "$out"); fi
  echo "${cmd[*]}"
  [[ -n ${DRY_RUN:-} ]] && return 0
  mkdir -p "$RUNS"
  local t0 l0 rc=0
  t0=$(date +%s); l0=$(cut -d' ' -f1-3 /proc/loadavg)
  "${cmd[@]}" || rc=$?
  echo "$(( $(date +%s) - t0 )) s, rc $rc, load $l0 -> $(cut -d' ' -f1-3 /proc/loadavg), $(date -Is)" \
    >> "$out/wall_seconds.txt"
}

for g in "${groups[@]}"; do
  case $g in
    bio)  run paper-es/bio-fa --rule bio --feedback fa ;;
    pool) run paper-es/pool-fa-matrix-sweep --rule pool --feedback fa --f5-f8 matrix --l1 0.1,1 ;;
    *) echo "unknown group $g (bio pool)" >&2; exit 2 ;;
  esac
done
