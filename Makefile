# Two commands on a fresh machine (Debian, Python 3.11, root for apt-get):
#   make demo   - set up, run the offline demo study (2 workers), write its report to reports/demo/
#   make test   - set up, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test setup system-deps

$(BIN)/googlenet-study: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/googlenet-study

# Debian packages the browser and PDF tests drive: chromium (through Playwright) and pdftoppm.
system-deps:
	@command -v chromium >/dev/null && command -v pdftoppm >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils)

demo: setup
	$(BIN)/googlenet-study sweep experiments/demo.yaml --workers 2

test: setup system-deps
	$(BIN)/python -m pytest
