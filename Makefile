# The two commands of README.md, plus lint.
#   make run   - a development server on loopback (creates .venv and var/ on first run)
#   make test  - the whole test suite
#   make lint  - ruff check, ruff format --check, mypy
#   make bench - the benchmark beside Dovecot (docs/performance.md)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VAR := var

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# One shell per recipe, so the first-run setup below reads as one script.
.ONESHELL:
.PHONY: run test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }

# Re-install only when the packaging changes; the editable install sees code changes.
$(VENV)/.installed-run: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@if [ ! -f $(VAR)/mailaccess.toml ]; then
	  # First run: config, users file, certificate, mail root, and a demo
	  # user with a random password (kept in var/demo-password) and mail.
	  $(BIN)/mailaccess init $(VAR) --demo demo
	fi
	echo
	echo "mailaccess on localhost: IMAP 1143, IMAPS 1993, POP3 1110, POP3S 1995, LMTP 2424"
	if [ -f $(VAR)/demo-password ]; then
	  echo "demo user: demo   password: $$(cat $(VAR)/demo-password)"
	fi
	echo "clients trust $(VAR)/tls/cert.pem and connect to localhost"
	echo
	exec $(BIN)/twistd -n --pidfile=$(VAR)/twistd.pid mailaccess --config $(VAR)/mailaccess.toml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	bench/run.sh $(BENCH_ARGS)
