#!/bin/sh
# The `bench` target: generate the data once (cached in bench/data/), then run both
# servers side by side and print the table.  Arguments go to bench/run.py
# (--quick, --reps N, --only WORKLOAD, --servers mailaccess,Dovecot, --no-store).
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench "$@"
