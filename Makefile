# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install lint bench clean serve bytecode

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# uv downloads, installs and compiles in parallel (a minute instead of two); like pip, it
	# takes wheels from the machine's PIP_FIND_LINKS (e.g. a local CPU build of torch).
	# Bytecode is compiled here, once: where PYTHONDONTWRITEBYTECODE is set (as on the CI
	# machines), nothing caches it at import, and every process would compile every module.
	$(BIN)/python -m pip install --quiet -c constraints.txt uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
		$(foreach links,$(PIP_FIND_LINKS),--find-links $(links)) -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

# The project's own modules are installed editable, so the install step does not compile them;
# where PYTHONDONTWRITEBYTECODE is set, every process (each test worker, each Dagster
# subprocess) would compile them again at import. Python reads __pycache__ either way; compileall
# only recompiles files changed since the last run.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 atft_pipeline assets resources bench tests >/dev/null

demo: $(STAMP) bytecode
	$(BIN)/atft demo

# Every test, in parallel over the machine's cores (pytest-xdist, see pyproject.toml).
test: $(STAMP) bytecode
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

# The edit loop: everything but the tests marked slow (Dagster runs, started processes, model
# training, real-data slices).
test-fast: $(STAMP) bytecode
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not realdata"

# Code server, webserver and daemon on the Postgres at ATFT_POSTGRES_URL (README "Deploying").
serve: $(STAMP)
	$(BIN)/python -m assets.serve

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .atft
