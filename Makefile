# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv with Python 3.11 and install the project with its dev extra.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean sample

$(STAMP): pyproject.toml package.json package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The web pages' GOV.UK Frontend, and axe-core for the browser tests (node_modules/).
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unified-record demo

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy src bench

sample: $(STAMP)
	$(BIN)/unified-record generate --people 500 --seed 7 --out synthetic_data/sample

clean:
	rm -rf $(VENV) var node_modules
