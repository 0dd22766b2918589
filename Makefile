# helios-scaler: `make demo` and `make test` are the two commands a fresh machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# apt-get, through sudo unless we are root (CI machines and containers run as root).
APT := $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: demo test check lint unit integration prometheus clean

$(STAMP): pyproject.toml
	@# Debian's python3 has no venv module until python3-venv is installed.
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "installing Debian's python3-venv"; \
	  $(APT) update -qq && $(APT) install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: install, then serve forecasts of the embedded WorldCup98 replay on :6000 (gRPC) and :8080 (HTTP)
demo: $(STAMP)
	$(VENV)/bin/helios-scaler demo

## prometheus: install Debian's prometheus + promtool when missing (the integration tests need them)
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  $(APT) update -qq && $(APT) install -y -qq prometheus >/dev/null; }

## check: generated code, then lint
check: $(STAMP)
	PYTHON=$(PY) scripts/gen_proto.sh --check
	$(MAKE) --no-print-directory lint

## lint: ruff, mypy (strict), and the layering contracts (import-linter, in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	$(VENV)/bin/ruff format --check src tests $(wildcard benchmarks)
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

## test: install everything, then run the checks and the whole test suite (unit + real Prometheus + real gRPC)
test: $(STAMP) prometheus check
	$(VENV)/bin/pytest

## unit: the fast tests (fakes, no servers)
unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

## integration: the tests that start real Prometheus, gRPC and CLI processes
integration: $(STAMP) prometheus
	$(VENV)/bin/pytest tests/integration

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
