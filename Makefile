# Two commands do all set-up: `make train` and `make test`. Both are idempotent: the venv stamp
# depends on the lock file and pyproject.toml, so a second run skips installation.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: setup train test test-slow lint bench clean

setup: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml omnisafe_metacpo.pth _omnisafe_metacpo_hook.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and alone, so pip takes the local CPU wheel (never a CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps -r requirements/lock.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import omnisafe_metacpo; omnisafe_metacpo.check_installed()"
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

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check omnisafe_metacpo task_distributions tests benchmarks

clean:
	rm -rf $(VENV)
