#!/usr/bin/env bash
# The main job: start a local lab of our own, run the quickstart runbook headless, write the executed
# notebook and its plots to out/, and remove the lab again (whatever happens).
set -euo pipefail
cd "$(dirname "$0")/.."
own_home=""
if [ -z "${NBOPS_HOME:-}" ]; then own_home=$(mktemp -d /tmp/nbops-demo.XXXXXX); export NBOPS_HOME="$own_home"; fi
export NBOPS_PROGRESS=text MPLBACKEND=Agg
mkdir -p out
cleanup() {
  .venv/bin/nbops lab down >/dev/null 2>&1 || true
  # keep the run's history store with its executed notebook; remove the temporary home
  if [ -n "$own_home" ]; then cp -f "$own_home/history.sqlite" out/ 2>/dev/null || true; rm -rf "$own_home"; fi
}
trap cleanup EXIT
start=$(date +%s)
.venv/bin/nbops lab up
.venv/bin/papermill --log-level WARNING notebooks/00-quickstart.ipynb out/00-quickstart.ipynb -p out_dir "$PWD/out"
.venv/bin/nbops lab status
echo "demo: done in $(( $(date +%s) - start )) s — executed notebook: out/00-quickstart.ipynb, plots: out/*.png, history: out/history.sqlite"
