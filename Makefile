# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SPEC ?= sweeps/specs/demo.yaml

.PHONY: demo test install install-test chromium bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,postgres]"

demo:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory install || exit $$?; \
	installed=$$(date +%s); \
	$(BIN)/fitgap launch $(SPEC) || exit $$?; \
	done=$$(date +%s); \
	echo "install: $$((installed - start)) s, run: $$((done - installed)) s"

# The HTML report test renders the page in headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Chromium (apt-get install chromium) for the HTML report test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || { \
	    echo "could not install Chromium: run 'sudo apt-get install chromium' and retry"; exit 1; }; }

test: install-test chromium
	$(BIN)/python -m pytest

clean:
	rm -rf fitgap-data .pytest_cache
