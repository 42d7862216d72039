# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint bench clean serve

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/atft demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Code server, webserver and daemon on the Postgres at ATFT_POSTGRES_URL (README "Deploying").
serve: $(STAMP)
	$(BIN)/python -m assets.serve

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .atft
