# cloud-ia: `make up` runs the whole system locally, `make test` runs every test.
# Both install what they need first (virtual environment, pip and npm packages, redis-server).
SHELL := /bin/bash
PY := .venv/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_VERSION_CHECK := 1
TARGET ?= local
STAGE ?= dev

.PHONY: help deps up test synth deploy-local dlq users chaos bench clean .system-packages

help:
	@echo "make up            run the whole system locally (emulator, Redis, deploy, gateway, worker, fake LLM)"
	@echo "make test          run every test"
	@echo "make synth         synthesize TARGET=aws|local STAGE=dev|prod"
	@echo "make deploy-local  deploy the local target to the emulator on :4566"
	@echo "make dlq ARGS=...  inspect and redrive the dead-letter queue"
	@echo "make users ARGS=... invite, list, disable, enable, delete users (python -m cloudia.users --help)"
	@echo "make chaos         the chaos and load suite, long form (bounded in time, loopback only)"
	@echo "make bench         print the benchmarks"

deps: .venv/.installed node_modules/.installed .system-packages

.venv/.installed: requirements.txt requirements-dev.txt functions/requirements.txt worker_image/requirements.txt
	@echo "==> Python packages (.venv)"
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	@echo "==> npm packages (pinned CDK CLI and cdklocal)"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# redis-server (tests and `make up`) and Chromium (browser tests), from Debian's packages.
.system-packages:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	 test -x /usr/bin/chromium || missing="$$missing chromium"; \
	 if [ -n "$$missing" ]; then \
	   echo "==> system packages:$$missing"; \
	   if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	   else echo "install them with: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	 fi

up: deps
	@$(PY) -m local_runtime.up

test: deps
	@$(PY) -m pytest

synth: deps
	@npx cdk synth -c target=$(TARGET) -c stage=$(STAGE) -q -o cdk.out.$(TARGET)-$(STAGE)

deploy-local: deps
	@$(PY) -c "from local_runtime.emulator import ensure_emulator, deploy_local; \
	  endpoint, _ = ensure_emulator(4566); deploy_local(endpoint, '$(STAGE)')"

dlq: deps
	@$(PY) -m cloudia.dlq $(ARGS)

users: deps
	@$(PY) -m cloudia.users $(ARGS)

chaos: deps
	@$(PY) -m chaos --long

bench: deps
	@for script in bench/*.py; do echo "==> $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf cdk.out* .cdk .pytest_cache
