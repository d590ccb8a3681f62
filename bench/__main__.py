"""``python -m bench``: the benchmark against Dovecot (see bench/run.py)."""

from bench.run import main

raise SystemExit(main())
