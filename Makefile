# Two entry points (see README.md): `make bench` and `make test`.
# torch is pinned here (not in pyproject) so a CPU build is installed from the local wheel.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: bench test venv clean pytest lint typecheck docs examples wheel-check

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)
	touch $@

$(VENV)/.bench: $(VENV)/.torch pyproject.toml
	$(PY) -m pip install -q -e ".[bench]"
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.dev

bench: $(VENV)/.bench
	$(VENV)/bin/tailwise bench

# What CI runs (.ci/run): lint, types, tests + doctests, the docs site, the examples, the wheel.
test: lint typecheck pytest docs examples wheel-check

pytest: $(VENV)/.dev
	$(PY) -m pytest -q -n 2 -p no:cacheprovider --doctest-modules src/tailwise tests

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src examples tools docs/conf.py

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

# -W: a warning (broken docstring markup, dangling reference, page outside the toctree) fails
docs: $(VENV)/.dev
	$(VENV)/bin/sphinx-build -W --keep-going -q -j 2 -b html docs docs/_build/html

examples: $(VENV)/.dev
	$(PY) examples/long_tailed_training.py --smoke
	$(PY) examples/config_driven.py --smoke
	$(PY) examples/lightning_module.py --smoke

wheel-check: $(VENV)/.dev
	$(PY) tools/check_wheel.py

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info docs/_build .mypy_cache .ruff_cache
