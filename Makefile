# Quick start: `make demo` runs D3D end to end on a generated motion dataset; `make test` runs the test suite.
# Both build the virtual environment from requirements.txt first (once; again when requirements.txt changes).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_ARGS ?=

.PHONY: venv demo test test-fast clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: venv
	$(PY) -m examples.motion_demo --output_dir=demo_output $(DEMO_ARGS)

test: venv
	$(PY) -m pytest -q -n auto --dist loadfile tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) demo_output demo_quick
