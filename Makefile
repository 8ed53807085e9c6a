# Two entry points for a fresh machine: `make run` (the main job) and `make test`.
# Both create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
CONSTITUTION ?= constitutions/claude.md
ARGS ?=
BIN := $(VENV)/bin

.PHONY: run test lint bench clean check-readers check-ray

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/sdf build --constitution $(CONSTITUTION) $(ARGS)

test: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

# megatron-core and datatrove read the shards themselves; ~1.1 GB of torch CPU wheels on top of .[dev]
check-readers: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,readers]'
	$(BIN)/python -m pytest -q tests/test_readers_frameworks.py

# filter, dedup and pack with --executor ray on a copy of a local run: the same corpus, rejects and shards
check-ray: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	$(BIN)/python -m pytest -q tests/test_ray.py

bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/perf.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/pack.py
	$(BIN)/python bench/build.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
