# The README's two commands: `make reproduce` (the main job) and `make test`.
# Each creates its own virtual environment and installs the pinned versions into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?= cpu
OUT ?= runs/reproduce-$(SCALE)

.PHONY: install reproduce test lint format

$(BIN)/overparam: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev,tensorboard]'
	touch $@

install: $(BIN)/overparam

reproduce: install
	$(BIN)/overparam reproduce --scale $(SCALE) --out $(OUT)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks
