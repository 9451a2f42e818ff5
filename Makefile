# Two commands on a fresh machine:  `make demo` (set up + run the quickstart runbook on the local lab)
# and `make test` (set up + the whole test suite). CI runs `make test` (.ci/run).
.PHONY: setup demo test lint lab-up lab-down bench

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test:
	bash scripts/setup.sh --test
	.venv/bin/ruff check nbops tests bench
	.venv/bin/python -m pytest

lint:
	.venv/bin/ruff check nbops tests bench

lab-up: setup
	.venv/bin/nbops lab up

lab-down:
	.venv/bin/nbops lab down
