# The two commands of the README: `make run` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FACES_TEST_DATA ?= ../shared/data
export FACES_TEST_DATA

.PHONY: run test bench install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(BIN)/faces serve

# Three pytest processes: the suite; the tests whose driver starts a Ray cluster of its own (pyproject's
# own_cluster marker: the Serve config deployed with autoscaling); the multi-node fail-over tests (a head
# and two worker nodes started with `ray start`, each test under a hard time limit), whose driver joins
# the cluster they start, alone in the last, so that whatever a killed node leaves behind touches no other test.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m own_cluster --ignore=tests/test_multi_node.py
	$(BIN)/python -m pytest -m own_cluster tests/test_multi_node.py

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) data
