# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install lint bench clean serve

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

demo: $(STAMP)
	$(BIN)/atft demo

# Every test, in parallel over the machine's cores (pytest-xdist, see pyproject.toml).
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

# The edit loop: everything but the tests marked slow (whole-graph runs, model training,
# real-data slices); under a minute on two cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not realdata"

# Code server, webserver and daemon on the Postgres at ATFT_POSTGRES_URL (README "Deploying").
serve: $(STAMP)
	$(BIN)/python -m assets.serve

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .atft
