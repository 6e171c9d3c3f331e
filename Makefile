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

train: $(STAMP)
	$(BIN)/omnisafe train --algo MetaCPO --env-id SafetyPointCircle1-v0 \
		--custom-cfgs train_cfgs:torch_threads --custom-cfgs 1

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check omnisafe_metacpo task_distributions tests benchmarks

clean:
	rm -rf $(VENV)
