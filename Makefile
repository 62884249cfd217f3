# paraisite: `make run` (the main job) and `make test` (the tests). Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DATA := ../shared/data

# The data folder: ../shared/data when it exists (else the project's data/ or $PARAISITE_DATA_DIR).
ifneq ($(wildcard $(SHARED_DATA)/SHA256SUMS),)
export PARAISITE_DATA_DIR ?= $(abspath $(SHARED_DATA))
endif

.PHONY: setup run test test-fast data-check screen bench bench-predict bench-train bench-peer bench-gpu bench-crossprop clean
setup: $(VENV)/.installed
	@if [ ! -e data ] && [ -d $(SHARED_DATA) ]; then ln -s $(SHARED_DATA) data; echo "linked data -> $(SHARED_DATA)"; fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps matminer==0.10.1  # [tool.paraisite] no-deps
	touch $@

run: setup
	$(BIN)/python train.py

# The tests run in one process per core (pytest-xdist), each taking the next test as it finishes one.
PYTEST := $(BIN)/python -m pytest -q -n auto

test: setup
	$(PYTEST)

test-fast: setup  # the edit loop: every module, no test marked slow
	$(PYTEST) -m "not slow"

data-check: setup
	$(BIN)/paraisite data check

# Screening: the shipped κ model (paraisite/bundles/kappa, docs/models.md; no training) over the mirror's 2228
# Materials Project structures; prints the 20 lowest-κ candidates. SCREEN_RUNS=<run or sweep folder>: your own runs.
SCREEN_RUNS ?=
screen: setup
	@mkdir -p outputs/screen
	$(BIN)/paraisite predict $${PARAISITE_DATA_DIR:-data}/screening/mp_scan.json.gz \
		$(if $(SCREEN_RUNS),--run $(SCREEN_RUNS),--model kappa) \
		--output outputs/screen/mp_scan_predictions.csv --top 20 --below 2

bench: bench-predict bench-train bench-peer

bench-predict: setup
	$(BIN)/python bench/predict.py

bench-train: setup
	$(BIN)/python bench/train.py
	$(BIN)/python bench/train.py --only workers

# ours vs matgl's own training loop and predict_structure loop, one process, 1 thread → docs/results/bench.json
bench-peer: setup
	$(BIN)/python bench/peer.py

# On a GPU machine: CUDA smoke + predict parity with the CPU, training rates and job packing vs CPU cores
# → docs/results/gpu/ (docs/benchmarks.md, "On a GPU")
bench-gpu: setup
	$(BIN)/python bench/gpu.py --out docs/results/gpu

# Cross-property transfer on the CPU: seven of the paper's small sets × 3 seeds × the five modes on a carved test
# slice (budget and source recipe: sweeps/crossprop.sh); all 41 sets and the blind files: PART=blind|carved, no DATASETS.
bench-crossprop: setup
	PART=carved SEEDS=1,2,3 DATASETS=exfoliation_energy,piezo_max_dij,piezo_max_eij,expt_deltae,expt_bandgap,slme,spillage \
		sweeps/crossprop.sh hydra/launcher=joblib hydra.launcher.n_jobs=2 threads=1
	$(BIN)/python scripts/crossprop.py outputs/crossprop

clean:
	rm -rf outputs/runs outputs/multirun
