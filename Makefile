# cloud-ia: `make up` runs the whole system locally, `make test` runs every test.
# Both install what they need first (virtual environment, pip and npm packages, redis-server).
SHELL := /bin/bash
PY := .venv/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_VERSION_CHECK := 1
TARGET ?= local
STAGE ?= dev

.PHONY: help deps up test image-test synth deploy deploy-local dlq users chaos bench clean .system-packages

help:
	@echo "make up            run the whole system locally (emulator, Redis, deploy, gateway, worker, fake LLM)"
	@echo "make test          run every test"
	@echo "make image-test    build the worker image for arm64 (under qemu) and smoke-run it (minutes)"
	@echo "make synth         synthesize TARGET=aws|local STAGE=dev|prod"
	@echo "make deploy        check, then deploy the aws target STAGE=dev|prod (ARGS=--check-only; CDK_DOCKER=podman)"
	@echo "make deploy-local  deploy the local target to the emulator on :4566"
	@echo "make dlq ARGS=...  inspect and redrive the dead-letter queue"
	@echo "make users ARGS=... invite, list, disable, enable, delete users (python -m cloudia.users --help)"
	@echo "make chaos         the chaos and load suite, long form (bounded in time, loopback only)"
	@echo "make bench         print the benchmarks"

deps: .venv/.installed node_modules/.installed .system-packages

# The pinned packages, then the project itself, editable (pyproject.toml): its packages import from
# any directory, the worker's (worker_image/worker) as `worker`.
.venv/.installed: pyproject.toml requirements.txt requirements-dev.txt functions/requirements.txt worker_image/requirements.txt
	@echo "==> Python packages (.venv)"
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --editable .
	@touch $@

node_modules/.installed: package.json package-lock.json
	@echo "==> npm packages (pinned CDK CLI and cdklocal)"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# From Debian's packages: redis-server (tests and `make up`), Chromium (browser tests), and podman with
# what it needs to build and run the worker image as root (tests/image): buildah, runc (crun refuses a
# mixed cgroup v1/v2 layout), uidmap, debootstrap (the stand-in base when no registry can be reached).
# `make image-test` adds qemu-user-static and binfmt-support (the arm64 build) through EXTRA_PACKAGES.
.system-packages:
	@missing=""; need() { command -v "$$1" >/dev/null || test -x "$$1" || missing="$$missing $$2"; }; \
	 need redis-server redis-server; need /usr/bin/chromium chromium; \
	 need podman podman; need buildah buildah; need /usr/sbin/runc runc; need newuidmap uidmap; \
	 need /usr/sbin/debootstrap debootstrap; \
	 for pair in $(EXTRA_PACKAGES); do need "$${pair%%=*}" "$${pair#*=}"; done; \
	 if [ -n "$$missing" ]; then \
	   echo "==> system packages:$$missing"; \
	   if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	   else echo "install them with: sudo apt-get install -y$$missing" >&2; exit 1; fi; \
	 fi

up: deps
	@$(PY) -m local_runtime.up

# The linter and the type checker first (configured in pyproject.toml): either failing fails the run.
# Then the tests in two processes (pytest-xdist), one file's tests in one process: most of a run is
# waiting on streamed answers, deploys and restarts, so two halve its time on two cores. Each
# process starts its own servers (moto, redis-server) on free ports.
TEST_PROCESSES ?= 2
test: deps
	@$(PY) -m ruff check --quiet .
	@$(PY) -m mypy
	@$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile

# The worker image for arm64, the platform the stacks deploy, built under qemu-user-static (on a
# debootstrap'd arm64 base where no registry answers) and smoke-run: minutes cold, not in `make test`.
image-test: EXTRA_PACKAGES := qemu-aarch64-static=qemu-user-static /usr/sbin/update-binfmts=binfmt-support
image-test: deps
	@$(PY) -m pytest tests/image/arm64_image.py

synth: deps
	@npx cdk synth -c target=$(TARGET) -c stage=$(STAGE) -q -o cdk.out.$(TARGET)-$(STAGE)

# The guided deploy (python -m cloudia.deploy --help): a preflight that says what to do about each finding,
# then `npx cdk deploy --all -c target=aws -c stage=$(STAGE)`; the CDK builds the worker image with
# $CDK_DOCKER (docker when unset; e.g. `CDK_DOCKER=podman make deploy`). Only the Python and npm packages:
# no test tools are installed for a deploy.
deploy: .venv/.installed node_modules/.installed
	@$(PY) -m cloudia.deploy --stage $(STAGE) $(ARGS)

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
