# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_out
DEMO_ARGS ?=

.PHONY: demo test test-slow bench bench-seeds lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# --no-compile: bytecode for the thousands of TensorFlow modules a run never imports is not needed;
# it cuts the install by about 40%. Python compiles what a run imports, on first import, and keeps
# it, unless PYTHONDONTWRITEBYTECODE is set: then every process compiles again (`import tensorflow`
# 23 s instead of 12 on a Zen 3). The test suite starts many processes that import TensorFlow, so
# every target below clears that variable for its own run: the first process writes the
# bytecode of what it imports into .venv, and the others reuse it.
NO_PYC_OVERRIDE := PYTHONDONTWRITEBYTECODE=

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev]"
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e ".[bench]"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(NO_PYC_OVERRIDE) $(BIN)/kerasmed demo --workdir $(DEMO_DIR) $(DEMO_ARGS)

# Most tests spend their time in one thread (tracing, small models, file work), so the suite runs
# in TEST_WORKERS processes (pytest-xdist); an idle worker steals queued tests from a busy one.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist worksteal

test: $(VENV)/.installed-dev
	$(NO_PYC_OVERRIDE) $(BIN)/python -m pytest $(PYTEST_PARALLEL)

test-slow: $(VENV)/.installed-dev  # the whole suite, slow tests included
	$(NO_PYC_OVERRIDE) $(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not gpu"

# Training throughput: tf.data vs in-memory ceiling vs the PyTorch peer -> bench/train.{json,md,png};
# then DICOM ingestion and cache throughput against that training figure -> bench/ingest.{json,md,png}
bench: $(VENV)/.installed-bench
	$(NO_PYC_OVERRIDE) $(BIN)/kerasmed bench-train configs/lung_nodule_seg_2d.yaml --output bench --repeats 9 --window 30
	$(NO_PYC_OVERRIDE) $(BIN)/kerasmed bench-ingest configs/lung_nodule_seg_2d.yaml --output bench --cases 32 --repeats 5

# Validation Dice of the fast profile's budget (22 epochs of 200 steps) over three seeds (float32;
# about 26 minutes on a 2-core Zen 3).
bench-seeds: $(VENV)/.installed
	$(NO_PYC_OVERRIDE) $(BIN)/kerasmed bench-seeds configs/lung_nodule_seg_2d.yaml --set training.epochs=22 \
	  --set training.steps_per_epoch=200 --seeds 0 1 2 --output bench/seeds

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check kerasmed export serving tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) runs bench
