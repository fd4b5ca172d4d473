# The two commands a newcomer runs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Empty: the data directory is the program's default (./data), the one every
# `dsmpacs` command run from here uses without --data-dir.
DATA   ?=
DSMPACS = $(BIN)/dsmpacs$(if $(DATA), --data-dir $(DATA))
STAMP  := $(VENV)/.installed

.PHONY: run test bench venv spk wheelhouse settings-doc clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "python3 venv is missing: sudo apt-get install python3-venv"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

venv: $(STAMP)

## Start the archive on embedded SQLite with its data in ./data (or DATA=dir); the
## first run creates an administrator and prints its generated password once. The
## web server answers this machine only (web_host), and modalities store once
## registered (unknown_ae_may_store): both in docs/admin-guide.md.
run: $(STAMP)
	$(DSMPACS) user ensure-admin
	@echo "Modalities may store once registered: $(DSMPACS) ae add NAME AE_TITLE HOST PORT"
	@echo "(HOST '*' and PORT 0 --no-move-destination for a sender known by its AE title only)"
	$(DSMPACS) serve

## Lint, then run the test suite (real dcmtk peers, real MariaDB when reachable)
# ruff first: a lint finding fails in seconds, before fifteen minutes of tests.
# Three workers on two cores: with three, a 100-test part of the suite kept both
# cores 96% busy (a fourth would not help), and the whole took 15 to 17 minutes in
# clean-clone CI rehearsals on the 2-core development VM. Each test module stays on
# one worker, and the fake-NAS tests, which share one system user, run one at a
# time on one worker beside the rest (tests/scheduling.py).
# The slowest tests are listed at the end.
test: $(STAMP)
	$(BIN)/ruff check package tests bench
	$(BIN)/python -m pytest -n 3 --dist loadfile --durations=15

## Benchmarks beside Orthanc and dcmtk (bench/README.md); a smoke run in a few
## minutes: make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## Build the Synology DSM package(s) into dist/ (docs/dsm-package.md)
spk: $(STAMP)
	PYTHON=$(BIN)/python ./spk_build.sh

## Keep every wheel `make spk` needs in ./wheelhouse, so later builds work offline
wheelhouse: $(STAMP)
	PYTHON=$(BIN)/python ./spk_build.sh --wheelhouse

settings-doc: $(STAMP)
	$(BIN)/dsmpacs settings --markdown > docs/settings.md

clean:
	rm -rf $(VENV) build dist *.egg-info bench/.corpus bench/.work
# (wheelhouse/ stays: refilling it needs the network)
