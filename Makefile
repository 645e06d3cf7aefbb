# Two commands matter: `make demo` and `make test`. Both set up what is missing first.
# Setup is idempotent: stamps record what was installed and are redone only when
# pyproject.toml or web/package.json change.

SHELL   := /bin/bash
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.setup-stamp
# pytest-xdist workers for `make test` (one per core; PostgreSQL tests: one schema each)
TEST_WORKERS ?= auto
WEBSTAMP:= web/node_modules/.setup-stamp

.PHONY: setup demo test lint browser-deps web clean bench

setup: $(STAMP) web

# The environment takes about 7 GiB (PyTorch's CUDA build); pip's download cache would
# add 3 GiB more, so it is off. Low disk gets one warning line before pip starts.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt 9 ]; then echo "warning: $$free GiB free on $$(df -P . | awk 'NR==2 {print $$6}'); setting up the environment needs about 9 GiB"; fi
	$(PIP) install -q --no-cache-dir --upgrade pip
	$(PIP) install -q --no-cache-dir -e '.[test]'
	@touch $(STAMP)

web: $(WEBSTAMP)

$(WEBSTAMP): web/package.json web/build.mjs $(wildcard web/src/*)
	@if [ -f web/package.json ]; then \
	  cd web && npm install --no-audit --no-fund --loglevel=error && npm run --if-present build && touch node_modules/.setup-stamp; \
	fi

browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian chromium for the real-browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "warning: /usr/bin/chromium is missing and we are not root: browser tests will fail"; \
	  fi; \
	fi

demo: setup
	$(PY) -m causalvis demo

# ruff's linter (what `make test` and CI enforce); the code is formatted by hand to 100
# columns, not by `ruff format`
lint: setup
	.venv/bin/ruff check src tests benchmarks

test: setup browser-deps
	.venv/bin/ruff check src tests benchmarks
	@. .ci/testdb.sh; $(PY) -m pytest -n $(TEST_WORKERS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

# Benchmarks: the comparison peers (Lucent) go into their own folder, seen only by the
# peer's side (benchmarks/suite.py --peers); results in benchmarks/results/.
PEERS := .bench-peers
$(PEERS)/.stamp:
	$(PIP) install -q --no-deps --target $(PEERS) torch-lucent kornia==0.4.1 decorator
	@touch $@

bench: setup $(PEERS)/.stamp
	$(PY) benchmarks/suite.py --peers $(PEERS) $(BENCH_ARGS)

clean:
	rm -rf .venv web/node_modules web/dist $(PEERS)
