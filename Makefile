# The two commands of the README. Both do all set-up on a fresh machine first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint format bench test-slow

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/tripletkit train configs/fashion-mnist.toml

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/train_fmnist.py
