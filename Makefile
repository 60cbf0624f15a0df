# Two commands: `make demo` (arrives with the training issue) and `make test`.
# Each bootstraps .venv from pyproject.toml on a machine with only Python 3.11 and pip.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Layer and model tests run again on JAX and PyTorch after the full TensorFlow run.
MULTI_BACKEND_TESTS := $(wildcard tests/layers tests/models)
PYTEST := $(PY) -m pytest -q -p no:cacheprovider
# The JAX run compiles many tiny graphs once each: cheap compiles beat fast kernels there.
JAX_XLA_FLAGS := --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true
# Seconds the slow tests may take inside `make test`; later ones are skipped and reported.
SLOW_BUDGET ?= 300

.PHONY: test test-tf test-jax test-torch test-slow venv lint

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test,jax,torch]"
	touch $(STAMP)

test: $(STAMP) lint test-tf test-jax test-torch

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard keras_vtn tests benchmarks examples)

test-tf: $(STAMP)
	KERAS_BACKEND=tensorflow KERAS_VTN_SLOW_BUDGET_S=$(SLOW_BUDGET) $(PYTEST) tests

test-jax: $(STAMP)
	KERAS_BACKEND=jax XLA_FLAGS="$(JAX_XLA_FLAGS)" $(PYTEST) -m "not slow" $(MULTI_BACKEND_TESTS)

test-torch: $(STAMP)
	KERAS_BACKEND=torch $(PYTEST) -m "not slow" $(MULTI_BACKEND_TESTS)

test-slow: $(STAMP)
	KERAS_BACKEND=tensorflow $(PYTEST) -m slow tests || test $$? -eq 5
