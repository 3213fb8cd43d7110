# `make demo` and `make test` are the whole set-up on a fresh machine with Python 3.11:
# each creates .venv with the project and its extras on first use, then runs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-browser bench bench-quick clean netns-tools browser

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bftledger demo

test: $(STAMP) netns-tools
	$(PY) -m pytest tests

# The partition tests run replicas in network namespaces: they need root and iproute2 ('ip').
netns-tools:
	@command -v ip >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq iproute2; } \
	  || { echo "error: the partition tests need iproute2 ('ip') and root; run 'make test' as root"; exit 1; }

# The lab's HTML trace rendered in headless Chromium (Debian's package, installed as root if missing).
test-browser: $(STAMP) browser
	$(PY) tests/browser/check_trace.py

browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
	  || { echo "error: test-browser needs chromium; run 'make test-browser' as root or install it"; exit 1; }

test-slow: $(STAMP)
	$(PY) -m pytest tests -m slow

bench-quick: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench --quick

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
