#!/usr/bin/env bash
# N sweeper processes on one Optuna study, on this machine:
#   scripts/workers.sh N <the search's python -m jscexp -m arguments>
# Each worker gets its own sweep dir; all of them ask the shared study for trials until it
# holds n_trials, and log under one MLflow parent run. On other hosts run the same arguments
# with the same backend URLs (backend=postgres): they join the same study.
set -euo pipefail
n="${1:?usage: scripts/workers.sh N <search arguments>}"
shift
stamp="$(date +%Y-%m-%d_%H-%M-%S)"
pids=()
for i in $(seq "$n"); do
  "${PY:-$(dirname "$0")/../.venv/bin/python}" -m jscexp -m "$@" "hydra.sweep.dir=multirun/workers-$stamp/w$i" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
