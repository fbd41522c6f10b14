#!/usr/bin/env bash
# Carry the 20-seed runs (scripts/seeds20_runs.sh) from one session to the next: run directories are
# not in git (runs/ is ignored), so their state -- config.json, metrics.jsonl, metrics_cut.jsonl,
# summary.json, wall_seconds.txt and the checkpoints -- is packed into one committed archive.
#
#   bash scripts/seeds20_archive.sh save      # runs/seeds20 -> runs-archive/seeds20.tar.gz (stop the runs first)
#   bash scripts/seeds20_archive.sh restore   # runs-archive/seeds20.tar.gz -> runs/seeds20 (refuses to overwrite)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/seeds20}
ARCHIVE=${ARCHIVE:-runs-archive/seeds20.tar.gz}
case ${1:-} in
  save)
    if pgrep -f "plastic-jax meta-train.*$RUNS" >/dev/null; then
      echo "a run in $RUNS is still being written; stop it first (kill -TERM: it checkpoints)" >&2; exit 2
    fi
    mkdir -p "$(dirname "$ARCHIVE")"
    tar czf "$ARCHIVE.tmp" --exclude='.lock' -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
    mv "$ARCHIVE.tmp" "$ARCHIVE"
    echo "saved $RUNS -> $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))" ;;
  restore)
    if [[ -e $RUNS ]]; then echo "$RUNS exists; move it away first" >&2; exit 2; fi
    mkdir -p "$(dirname "$RUNS")"
    tar xzf "$ARCHIVE" -C "$(dirname "$RUNS")"
    echo "restored $ARCHIVE -> $RUNS" ;;
  *) echo "usage: bash scripts/seeds20_archive.sh save|restore" >&2; exit 2 ;;
esac
