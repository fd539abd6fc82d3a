# jscexp — `make help` lists the targets.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
ROWS    ?= 200000   # demo: stand-in rows (the full stand-in has 986806)
EPOCHS  ?= 5        # demo: epochs per run (the lab used 10)
N       ?= 2        # workers: sweeper processes joining one Optuna study
ARGS    ?=          # workers: the search, e.g. ARGS="+sweep=optuna_lr_bs backend=postgres"

LAB_ARGS ?= --dataset jsc_synth --rows 100000 --epochs 3  # lab: the quick version; LAB_ARGS= for the lab's own
STUDIES ?= optuna-journal.log  # dashboard: the Optuna storage (a journal file or a database URL)

.PHONY: help install demo test test-slow quick lint lab bench bench-search bench-front bench-peers workers services ui dashboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv with CPU torch 2.13.0 and jscexp (editable)

# CPU torch first: an unpinned torch would pull a multi-GB CUDA build. The compat editable
# mode keeps hydra_plugins visible to Hydra's namespace scan (hydra #2359).
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

demo: install ## the main job: lab-1 batch-size sweep on the synthetic stand-in, then its table
	$(BIN)/python -m jscexp -m +sweep=lab1_batch_size dataset=jsc_synth dataset.n_rows=$(strip $(ROWS)) max_epochs=$(strip $(EPOCHS))
	$(BIN)/python -m jscexp.table --experiment lab1_batch_size

test: install ## the test suite but its slow end-to-end tests (PostgreSQL + an MLflow server for the scale-out ones)
	@$(MAKE) --no-print-directory _pytest MARKS="not slow"

test-slow: install ## the slow end-to-end tests: the lab, the chaos test, the UI, kills and outages (CI runs them too)
	@$(MAKE) --no-print-directory _pytest MARKS="slow"

_pytest:
	@scripts/services.sh up || echo "warning: no PostgreSQL/MLflow server: the scale-out tests will be skipped" >&2
	@set -a; [ ! -f .services/env ] || . .services/env; set +a; \
	  $(BIN)/python -m pytest -n 3 --dist loadfile --durations=15 -m "$(MARKS)"; status=$$?; scripts/services.sh down; exit $$status

quick: install ## the tests that start no process and no service, while you work (about a minute)
	$(BIN)/python -m pytest -n 2 -m "not slow and not cli"

lint: install ## ruff (configured in pyproject.toml) and mypy on jscexp/
	$(BIN)/ruff check .
	$(BIN)/mypy

workers: install ## N sweeper processes on one Optuna study: make workers N=2 ARGS="+sweep=… backend=postgres"
	@test -n "$(strip $(ARGS))" || { echo 'error: say which search: make workers N=2 ARGS="+sweep=optuna_lr_bs"' >&2; exit 2; }
	scripts/workers.sh $(strip $(N)) $(ARGS)

services: install ## start PostgreSQL + an MLflow server on it (scripts/services.sh down stops them)
	scripts/services.sh up

lab: install ## labs 1-2 end to end: every experiment not run yet, then reports/lab.md + lab.html from MLflow
	$(BIN)/python -m jscexp.report $(LAB_ARGS)

bench: install ## time the training path against the MASE-style baseline and a raw loop (not a test)
	$(BIN)/python bench/bench.py

bench-search: install ## grid (job by job, stacked), TPE and PBT on one space: best val acc and wall time
	$(BIN)/python bench/search.py

bench-front: install ## uniform grid, Optuna and learned widths: accuracy–EBOPs hypervolume and wall time
	$(BIN)/python bench/front.py --out docs/front

bench-peers: install ## beside the peers (pip install -e '.[peers]'): learned widths vs HGQ2 (accuracy, EBOPs, CPU); the search vs Ray Tune (wall, CPU)
	@$(BIN)/python -c "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in ('hgq', 'ray', 'psutil')))" || \
	  $(BIN)/pip install -q -e '.[peers]' --config-settings editable_mode=compat  # importing hgq needs KERAS_BACKEND
	KERAS_BACKEND=jax $(BIN)/python bench/peers.py --out bench/results/peers-cpu-$$(date +%F).md

ui: install ## the MLflow UI on ./mlflow.db: open the link it prints (the runs of each experiment)
	@$(BIN)/python -m jscexp.tracking.links sqlite:///mlflow.db http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

dashboard: install ## open optuna-dashboard on the studies (STUDIES=optuna-journal.log) at http://127.0.0.1:8080
	$(BIN)/optuna-dashboard $(if $(findstring ://,$(STUDIES)),,--storage-class JournalFileStorage) \
	  --host 127.0.0.1 --port 8080 $(strip $(STUDIES))

clean: ## remove run outputs and saved training states (keeps mlflow.db and .venv)
	rm -rf outputs multirun .jscexp
