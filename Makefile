# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint docs index whois bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)  ## start the bot (needs DISCORD_TOKEN in .env)
	$(BIN)/python bot.py

test: $(STAMP)  ## run the whole test suite (offline)
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff (lint and format), mypy, and the docs' tables current
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m docs.render --check

docs: $(STAMP)  ## fill the docs' tables from docs/results/*.json
	$(BIN)/python -m docs.render

index: $(STAMP)  ## build the index from GALLERY_DIR
	$(BIN)/python -m hxhbot index

bench: $(STAMP)  ## every benchmark (see README, Performance)
	$(BIN)/python -m tests.bench.bench_engine
	$(BIN)/python -m tests.bench.bench_index
	$(BIN)/python -m tests.bench.bench_bot

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
