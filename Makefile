# Two commands on a fresh machine: `make demo` runs the main job, `make test` the tests.
# Both create .venv on first use with the CPU build of torch (pip finds it on local disk); the
# demo installs tacfn alone, the tests add the test extra (trackers, S3 server, linters).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast install

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/tacfn demo

test: $(TEST_STAMP)
	$(PY) -m pytest -q

# The tests that start no Ray runtime, browser or cluster: minutes, for the edit-test loop.
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m 'not slow'
