# Everything runs inside .venv; `make setup` creates it with the CPU build of PyTorch.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
SWEEP ?= smoke_tiny
EXPERIMENT ?=
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup lock demo test test-all train sweep sweep-worker dashboard report bench bench-grid ui lint format clean

LOCK := constraints.txt

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build first: the package's own torch range then installs nothing more.
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	# Exactly the versions CI tested (make lock); pyproject's ranges stay for library users.
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with CPU torch and the package + dev extra, at the locked versions

lock:  ## re-resolve pyproject's ranges in a fresh venv and write the versions to constraints.txt
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q "$(TORCH_SPEC)"
	.lock-venv/bin/pip install -q -e '.[dev]'
	{ echo "# make lock: the versions make setup installs and CI tests (torch: TORCH_SPEC)."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton)'; } > $(LOCK)
	rm -rf .lock-venv

demo: $(STAMP)  ## CPU demo: tiny Qwen2 vs tiny BERT x LoRA vs full fine-tuning, then the table
	$(PY) -m src.train experiment=demo
	$(PY) -m src.summary --experiment demo

test: $(STAMP)  ## the default test suite (skips tests marked slow)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)  ## every test, slow ones included (the MLflow UI tests need Debian's chromium)
	$(PY) -m pytest -q

train: $(STAMP)  ## one run (or a grid with ARGS="-m ..."): make train ARGS="model=tiny_bert method=sft"
	$(PY) -m src.train $(ARGS)

# GPUS=0,1,2,3 (or all: every GPU nvidia-smi lists): each trial on the GPUs its memory estimate
# asks for (src/sweep/placement.py), or on GPUS_PER_TRIAL GPUs each (src/sweep/devices.py).
GPUS ?=
GPUS_PER_TRIAL ?= null
GPU_LIST = $(if $(filter all,$(GPUS)),$(shell nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, -),$(GPUS))
SWEEP_DEVICES = $(if $(GPUS),'hydra.sweeper.devices=[$(GPU_LIST)]' hydra.sweeper.gpus_per_trial=$(GPUS_PER_TRIAL))

sweep: $(STAMP)  ## Optuna study; re-run to resume: make sweep [SWEEP=lora_rank_lr_epochs] [ARGS="model=... data=..."] [GPUS=0,1,2,3 [GPUS_PER_TRIAL=2]]
	@test "$(GPUS)" != all -o -n "$(GPU_LIST)" || { echo "error: GPUS=all: nvidia-smi lists no GPU; give their ids, e.g. GPUS=0,1" >&2; exit 2; }
	$(PY) -m src.train -m hparams_search=$(SWEEP) $(SWEEP_DEVICES) $(ARGS)

sweep-worker: $(STAMP)  ## one more worker on the same study (another terminal, same SWEEP / ARGS)
	$(PY) -m src.train -m hparams_search=$(SWEEP) $(ARGS)

# The study of the newest sweep unless STUDY=<name> (sweeps/<name>/journal.log) or STORAGE=<url>.
STUDY ?=
STORAGE ?= $(if $(STUDY),sweeps/$(STUDY)/journal.log,$(shell ls -t sweeps/*/journal.log 2>/dev/null | head -n 1))
DASHBOARD_PORT ?= 8080

dashboard: $(STAMP)  ## optuna-dashboard on 127.0.0.1:8080 for a study: make dashboard [STUDY=<name> | STORAGE=<url>]
	@test -n "$(STORAGE)" || { echo "error: no study under sweeps/: run make sweep, or give STUDY=<name> or STORAGE=<url>" >&2; exit 2; }
	@test -x $(VENV)/bin/optuna-dashboard || $(PY) -m pip install -q -e '.[dashboard]'
	$(VENV)/bin/optuna-dashboard --host 127.0.0.1 --port $(DASHBOARD_PORT) $(STORAGE)

report: $(STAMP)  ## tables, verdicts, plots of an experiment: make report EXPERIMENT=c3_base_vs_instruct_by_size
	@test -n "$(EXPERIMENT)" || { echo "usage: make report EXPERIMENT=<name> [ARGS=...]" >&2; exit 2; }
	$(PY) -m src.report --experiment $(EXPERIMENT) $(ARGS)

bench: $(STAMP)  ## CPU benchmark vs the article's recipe (~7 min): benchmarks/results/bench.{json,md}
	$(PY) -m benchmarks.bench

bench-grid: $(STAMP)  ## re-run the real grid behind the sweep replay (~40 min): benchmarks/results/grid_curves.json
	$(PY) -m benchmarks.sweep --build

ui: $(STAMP)  ## MLflow UI on 127.0.0.1 against mlruns/ (loopback only: add auth before exposing it)
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
	  --default-artifact-root $(CURDIR)/mlruns/artifacts

lint: $(STAMP)  ## ruff (lint + format check) and mypy on src/
	$(VENV)/bin/ruff check src tests hydra_plugins
	$(VENV)/bin/ruff format --check src tests hydra_plugins
	$(VENV)/bin/mypy src hydra_plugins

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests hydra_plugins
	$(VENV)/bin/ruff format src tests hydra_plugins

clean:  ## remove caches and run data (mlruns/, sweeps/); keeps .venv
	rm -rf .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
	find mlruns sweeps -mindepth 1 -not -name .gitkeep -delete 2>/dev/null || true

# ---- Reliability and scale-out (issue 6): multi-GPU runs, shared services -------------------
NPROC ?= 2

.PHONY: train-ddp services services-stop

# torchrun starts NPROC processes (DDP, or FSDP when the run does not fit one GPU: trainer.strategy);
# all ranks share one output dir, rank 0 alone logs to MLflow and saves the checkpoint.
train-ddp: $(STAMP)  ## one run on NPROC GPUs: make train-ddp NPROC=2 ARGS="model=qwen2_7b_base method=sft"
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m src.train \
	  hydra.run.dir=sweeps/runs/ddp/$$(date +%Y-%m-%d/%H-%M-%S) $(ARGS)

services: $(STAMP)  ## PostgreSQL (Optuna storage) + MLflow server on 127.0.0.1, data in .services/
	scripts/services.sh start

services-stop:  ## stop what `make services` started
	scripts/services.sh stop
