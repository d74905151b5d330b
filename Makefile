# Two entry points (see README.md): `make bench` and `make test`.
# torch is pinned here (not in pyproject) so a CPU build is installed from the local wheel.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: bench test venv clean

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

test: $(VENV)/.dev
	$(PY) -m pytest -q -n 2 -p no:cacheprovider --doctest-modules src/tailwise tests

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
