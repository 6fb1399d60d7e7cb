# `make setup` builds .venv idempotently; `make demo` and `make test` do all set-up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-complete

.PHONY: setup demo test bench clean

setup: $(STAMP)

# DeepSpeed JIT-builds its CPU shared-memory comm op on first use (~30-50 s cold): setup builds it once.
$(STAMP): pyproject.toml requirements-cpu.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-cpu.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -c "from deepspeed.accelerator import get_accelerator as a; a().create_op_builder('ShareMemCommBuilder').load()"
	touch $(STAMP)

demo: setup
	$(BIN)/janus demo

# the allocator settings the `janus` CLI sets for itself (see cluster/cli.py)
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 1099511627776

test: setup
	$(BIN)/python -m pytest -q --durations=12

bench: setup
	$(BIN)/janus bench model --preset small --out runs/bench/model.json
	$(BIN)/janus bench loader --out runs/bench/loader.json
	$(BIN)/janus bench train --preset small --out runs/bench/train.json

clean:
	rm -rf $(VENV) runs *.egg-info
