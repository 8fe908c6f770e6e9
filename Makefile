# The two commands a newcomer runs on a fresh machine (Python >= 3.11 and make):
#   make run    set up .venv and run the main job
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
STAMP := $(VENV)/.installed

.PHONY: install run test

# torch==2.13.0 (extra `parity`) comes from a local CPU wheel where pip is set up with one.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,parity]'
	touch $@

install: $(STAMP)

run: install
	$(BIN)/bertflow checkpoint $(SHARED)/checkpoints/minilm-l3-h384-uncased.zip

test: install
	$(BIN)/python -m pytest
