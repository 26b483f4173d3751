# Two commands on a fresh machine (Debian, Python 3.11, root for apt-get):
#   make demo       - set up, run the offline demo study (2 workers), write its report to reports/demo/
#   make test       - set up, run the whole test suite on both cores (what CI runs), then its 15 slowest tests
# and one while working:
#   make test-fast  - the fast tier: no training through train(), no process, no server (pytest -m fast -n 2)
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test test-fast setup system-deps slurm-deps pdf-deps

$(BIN)/googlenet-study: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/googlenet-study

# Debian packages: WeasyPrint's libraries (report.pdf; `make demo` needs them too), and what the browser and
# PDF tests drive: chromium (through Playwright) and poppler-utils (pdftoppm, pdftotext, pdfinfo).
PDF_LIBS = libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0
pdf-deps:
	@test "$$(dpkg-query -W -f='$${db:Status-Status}\n' $(PDF_LIBS) 2>/dev/null | grep -cx installed)" = 3 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PDF_LIBS))

system-deps: pdf-deps slurm-deps
	@command -v chromium >/dev/null && command -v pdftoppm >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils)

# A single-node Slurm for tests/test_slurm.py (tests/slurm/start.sh starts it).
slurm-deps:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && \
	  command -v munged >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq slurmctld slurmd slurm-client munge)

demo: setup pdf-deps
	$(BIN)/googlenet-study sweep experiments/demo.yaml --workers 2

# The whole suite on both cores (pytest-xdist), a test file per worker at a time (--dist loadfile: a file's
# servers, Slurm cluster and shared runs are started once), longest files first (tests/conftest.py); every
# server takes a free port. It ends by listing the 15 slowest tests.
test: setup system-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

test-fast: setup
	$(BIN)/python -m pytest -m fast -n 2
