# steplab: two commands do everything on a fresh machine (see README Quickstart).
#   make demo   create .venv, install, run the default `steplab compare` study
#   make test   create .venv, install with test extras, run the whole suite
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean install browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files make re-runs fast: pip only runs when pyproject.toml changes.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e ".[all]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# Headless Chromium for the report test; best effort (the test skips with a reason if absent).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "note: could not install chromium; the browser check of the report will be skipped"; }

demo: $(VENV)/.installed
	$(BIN)/steplab compare

# --dist loadfile: each test file runs on one worker, so a module-scoped fixture (the 2-process
# groups and crash runs of the distributed tests) runs once, not once per worker
test: $(VENV)/.installed-test browser
	$(BIN)/python -m pytest -n 2 --dist loadfile --timeout=900 $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy --strict src

bench: $(VENV)/.installed-test
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache
