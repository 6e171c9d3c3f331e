# Two commands do all set-up: `make train` and `make test`. Both are idempotent: the venv stamp
# depends on the lock files and pyproject.toml, so a second run skips installation.
# The interpreter: PY if given (e.g. `make test PY=python3.12`), else the venv's own, else the
# first supported one of python3, python3.13, python3.12, python3.11 (requirements/install.sh says
# what it found, and what to do when none is supported). Supported: Python 3.11, 3.12 and 3.13.
PY ?=
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch comes from here where this index answers (the CPU build, ~0.2 GB), else from the package
# index's default (on Linux a CUDA build of several GB, which runs on the CPU too). A GPU host:
# TORCH_INDEX= (empty) or PyTorch's index for its CUDA version (docs/python_versions.md).
export TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup train test test-python test-slow lint bench clean

setup: $(STAMP)

$(STAMP): $(wildcard requirements/lock-py*.txt) requirements/install.sh pyproject.toml \
		omnisafe_metacpo.pth _omnisafe_metacpo_hook.py
	sh requirements/install.sh $(VENV) $(PY)
	touch $(STAMP)

# `make train`: MetaCPO on the Point-Circle task distribution through the stock CLI, then a summary
# (the run directory, the final and the untrained policy meta-tested on unseen test tasks, the
# command that plots the run). BUDGET=quick (the default) is sized to finish in about 15 minutes
# on a 2-core CPU; BUDGET=paper trains the MetaCPOPaper preset (the paper's settings) with the
# paper's budget from its YAML (3,000,000 steps in meta-iterations of 30,000: 5 tasks x (5 inner
# steps + 1) rollouts).
BUDGET ?= quick
# The quick budget: environment steps in all, and per meta-iteration (5 tasks x (5 + 1) rollouts
# of one 500-step episode). Retune these two when the sampling speed changes. Measured over 3
# meta-iterations with the batched sampler (2 cores shared with other jobs): ~7 s per 15,000-step
# meta-iteration plus ~8 s per meta-test (every 10th), so 80 meta-iterations take ~11 minutes,
# the final summary under a minute more.
QUICK_TOTAL_STEPS ?= 1200000
QUICK_STEPS_PER_EPOCH ?= 15000
TRAIN_ENV ?= SafetyPointCircle1-v0
# Each run gets a fresh --log-dir under this directory, so the summary finds the run just made.
TRAIN_LOG_ROOT ?= runs/make-train
# More `omnisafe train` options, and options of `omnisafe-metacpo-summary`.
TRAIN_ARGS ?=
SUMMARY_ARGS ?=

train: $(STAMP)
	@case "$(BUDGET)" in \
	  quick) algo=MetaCPO; budget="--total-steps $(QUICK_TOTAL_STEPS) --custom-cfgs algo_cfgs:steps_per_epoch --custom-cfgs $(QUICK_STEPS_PER_EPOCH)" ;; \
	  paper) algo=MetaCPOPaper; budget="" ;; \
	  *) echo "BUDGET must be quick or paper, not '$(BUDGET)'" >&2; exit 2 ;; \
	esac; \
	log_dir="$(TRAIN_LOG_ROOT)/$$(date +%Y%m%d-%H%M%S)"; \
	echo "$$algo on $(TRAIN_ENV), budget $(BUDGET), logs under $$log_dir"; \
	$(BIN)/omnisafe train --algo $$algo --env-id $(TRAIN_ENV) --log-dir "$$log_dir" \
		$$budget $(TRAIN_ARGS) && \
	$(BIN)/omnisafe-metacpo-summary "$$log_dir" $(SUMMARY_ARGS)

# `make bench`: the Figure-5 comparison (MetaCPO, MetaTRPO, CPO, CPOCorrected, TRPO x 3 task
# distributions x 3 seeds; MetaCPOPaper too in the 540k budget) as OmniSafe experiment grids, every
# checkpoint meta-tested alike, then on both cost scales the PNGs per env, meta_test.csv/.md,
# verdict.csv/.md and training.csv/.md in benchmarks/results/figure5_$(BUDGET)/. BUDGET=quick
# (the default, under 2 hours on 2 cores), 540k (about 9 hours) or paper (about two days here).
# Stopped and started again, it trains only unfinished runs and meta-tests only uncached ones.
# More options of `python -m benchmarks.figure5` (e.g. --workers, --estimate) in BENCH_ARGS.
BENCH_ARGS ?=

bench: $(STAMP)
	$(BIN)/python -m benchmarks.figure5 --budget $(BUDGET) $(BENCH_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# `make test-python PY=python3.12`: the default suite in a venv of that Python's own
# (.venv-py3.12), built like .venv; FRESH=1 builds it from scratch.
test-python:
	@test -n "$(PY)" || { echo "test-python needs PY, e.g. make test-python PY=python3.13" >&2; exit 2; }
	@ver=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])') || exit 2; \
	venv=.venv-py$$ver; \
	if [ -n "$(FRESH)" ]; then rm -rf $$venv; fi; \
	$(MAKE) --no-print-directory test VENV=$$venv PY=$(PY)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check omnisafe_metacpo task_distributions tests benchmarks

clean:
	rm -rf $(VENV)
