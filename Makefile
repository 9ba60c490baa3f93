# closedloop: `make demo` sets up .venv and runs the default closed loop offline on the built-in synthetic
# language; `make test` sets up .venv and runs the tests (`make test-slow` for the slow end-to-end ones).
# torch is pinned by $(CONSTRAINTS) (torch==2.13.0, a CPU build here). A CUDA user points it elsewhere:
#   make setup CONSTRAINTS=/dev/null        (or a file pinning the CUDA build they want)
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/closedloop run --preset default

# The default suite: one pytest worker per core (pytest-xdist), each with one torch thread; a test module stays on
# one worker, so its module fixtures are built once. `python -m pytest` alone runs serially (for -x, --pdb).
# The slow checks run serially: some use two torch threads (the demo's setting) or time the benchmark.
test: setup
	$(PY) -m pytest -q -n auto --dist loadscope

test-slow: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) *.egg-info
