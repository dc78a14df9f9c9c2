# Two commands: `make demo` and `make test`. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
OUT ?= out

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	@mkdir -p $(OUT)
	$(BIN)/mtiasim compare dlrm-v2 --chips mtia-200,mtia-300,h100-sxm-80gb,mi300x --plot $(OUT)/dlrm-v2.png
	$(BIN)/mtiasim compare llama2-70b --chips mtia-400,h100-sxm-80gb,b200-sxm-180gb,mi300x --plot $(OUT)/llama2-70b.png
	$(BIN)/mtiasim report --fleet examples/mix.yaml -o $(OUT)/fleet.html
	$(BIN)/mtiasim report dlrm-v2 --chips mtia-200,mtia-300,h100-sxm-80gb,mi300x -o $(OUT)/dlrm-v2.html

test: $(STAMP_DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP_DEV)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache build *.egg-info src/*.egg-info
