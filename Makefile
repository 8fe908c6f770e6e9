# The two commands a newcomer runs on a fresh machine (Python >= 3.11 and make):
#   make run    set up .venv with what the pipeline needs and run the main job
#               (extra flags: make run ARGS='--epochs 1')
#   make test   add the test extras to .venv (pytest, JAX, the torch/transformers references,
#               prefect-dask, psycopg, ONNX Runtime) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
RUNTIME := $(VENV)/.installed-runtime
TESTING := $(VENV)/.installed-test

.PHONY: install install-test run test

$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# torch==2.13.0 (extra `parity`) comes from a local CPU wheel where pip is set up with one.
$(TESTING): $(RUNTIME)
	$(BIN)/python -m pip install -q -e '.[dev,parity,dask,postgres,onnx]'
	touch $@

install: $(RUNTIME)

install-test: $(TESTING)

# The main job: the whole fine-tune flow. Where ../shared holds the real MRPC and MiniLM-L3 (no
# internet here), it is the source; elsewhere the public MSR files and Google's BERT-Tiny are.
LOCAL_SOURCES := $(if $(wildcard $(SHARED)/data/mrpc/msr_paraphrase_train.txt),\
	--source $(SHARED)/data/mrpc --checkpoint $(SHARED)/checkpoints/minilm-l3-h384-uncased.zip)

run: install
	$(BIN)/bertflow run $(LOCAL_SOURCES) $(ARGS)

test: install-test
	$(BIN)/python -m pytest
