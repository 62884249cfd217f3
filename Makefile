# paraisite: `make run` (the main job) and `make test` (the tests). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := ../shared/data

# The data folder: ../shared/data when it exists (else the project's data/ or $PARAISITE_DATA_DIR).
ifneq ($(wildcard $(SHARED_DATA)/SHA256SUMS),)
export PARAISITE_DATA_DIR ?= $(abspath $(SHARED_DATA))
endif

.PHONY: setup run test data-check clean
setup: $(VENV)/.installed
	@if [ ! -e data ] && [ -d $(SHARED_DATA) ]; then ln -s $(SHARED_DATA) data; echo "linked data -> $(SHARED_DATA)"; fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

run: setup
	$(BIN)/python train.py

test: setup
	$(BIN)/python -m pytest -q

data-check: setup
	$(BIN)/paraisite data check

clean:
	rm -rf outputs/runs outputs/multirun
