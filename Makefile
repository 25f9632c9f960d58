# Two commands on a fresh machine: `make demo` runs the main job, `make test` the tests.
# Both create .venv on first use with the CPU build of torch (pip finds it on local disk).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tacfn demo

test: $(STAMP)
	$(PY) -m pytest -q

# The tests that start no Ray runtime, browser or cluster: minutes, for the edit-test loop.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m 'not slow'
