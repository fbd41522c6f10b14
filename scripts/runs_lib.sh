# Shared by scripts/seeds20_runs.sh and scripts/chaos_runs.sh (sourced, not run): the frozen code
# copy, the CPU pin and `run`, which starts, resumes or skips one run directory. The caller sets
# RUNS, COMMON (the flags of a fresh run) and optionally PJ, FREEZE, CPU, DRY_RUN before sourcing.
PJ=${PJ:-.venv/bin/plastic-jax}
if [[ -n ${FREEZE:-} ]]; then  # run a frozen copy of the committed package: edits never reach a run
  rev=$(git rev-parse --short HEAD)
  [[ -d runs/code-$rev ]] || { mkdir -p "runs/code-$rev" && git archive HEAD plastic_jax | tar -x -C "runs/code-$rev"; }
  export PYTHONPATH=$PWD/runs/code-$rev
  echo "# frozen code: runs/code-$rev"
fi
pin=()
[[ -n ${CPU:-} ]] && pin=(taskset -c "$CPU")

run() {  # run NAME FLAGS...: start, resume or skip RUNS/NAME; wall time and load to its wall_seconds.txt
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
