# taskexec: the two commands a newcomer needs are `make run` and `make test`.
# Everything else is installed and started on demand by scripts/bootstrap.sh and scripts/services.sh.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python

# Test services (see scripts/services.sh); override on the command line if needed.
TEL_TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:55432/postgres
TEL_TEST_REDIS_URL    ?= redis://127.0.0.1:6379/0
TEL_TEST_AMQP_URL     ?= amqp://guest:guest@127.0.0.1:5672//

PYTEST_ARGS ?=
BENCH_OUT   ?= bench/results
SBOM_DIR    ?= sbom
SBOM_IMAGE  ?= taskexec:latest
BASE_IMAGE  ?= taskexec-base:bookworm
SOAK_MINUTES ?= 10
LINT_PATHS  ?= taskexec commands api workers sandbox tests bench

.PHONY: help setup bootstrap services services-start services-stop services-status \
        run test lint lock bench soak sbom clean distclean build-AutomatedTaskExecutorFunction

help:
	@echo "make run            install what is missing, start PostgreSQL/Redis/Docker, run 'taskexec up'"
	@echo "make test           install what is missing, start Redis/PostgreSQL/Docker, run pytest"
	@echo "                    (extra pytest args: make test PYTEST_ARGS='-k foo -x')"
	@echo "make setup          only install and start services"
	@echo "make lint           ruff + mypy"
	@echo "make lock           re-resolve requirements.lock / requirements-dev.lock from pyproject.toml (needs PyPI)"
	@echo "make bench          benchmarks, 4-12 min (output in $(BENCH_OUT))"
	@echo "make soak           10 minutes of load, fails on leaks (SOAK_MINUTES=n to change)"
	@echo "make sbom           CycloneDX SBOMs of the Python environment and the service image (in $(SBOM_DIR)/)"
	@echo "make services-stop  stop the Redis and PostgreSQL started by scripts/services.sh"
	@echo "make clean          stop services, remove .run/ and caches (keeps .venv)"
	@echo "make distclean      clean + remove .venv"

setup: bootstrap services

bootstrap:
	@bash scripts/bootstrap.sh

services: bootstrap
	@bash scripts/services.sh start

services-start: services

services-stop:
	@bash scripts/services.sh stop

services-status:
	@bash scripts/services.sh status

run: setup
	exec $(BIN)/taskexec up

# pytest exits 5 when it collects no test: reported, not treated as a failure.
test: setup
	@export TEL_TEST_DATABASE_URL='$(TEL_TEST_DATABASE_URL)' TEL_TEST_REDIS_URL='$(TEL_TEST_REDIS_URL)' \
	  TEL_TEST_AMQP_URL='$(TEL_TEST_AMQP_URL)'; \
	rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; \
	exit $$rc

lint: bootstrap
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)

# The lock files (hashes of every file on the package index, resolved for Python 3.11+ on any platform):
#   requirements-dev.lock  runtime + dev extra: what scripts/bootstrap.sh installs into .venv (make test, CI)
#   requirements.lock      the runtime set alone, constrained to the same versions: what the Dockerfile installs
# The `sbom` extra is left out on purpose (it pulls rfc3987-syntax; see pyproject.toml). After editing
# pyproject.toml's dependencies run `make lock`; `make lock LOCK_ARGS=--upgrade` moves everything to the
# newest releases the constraints allow (then run the tests and commit both files).
# uv runs from a venv of its own (at the version pyproject's dev extra pins), not from .venv: bootstrap refuses
# a lock that no longer satisfies pyproject.toml, and that is exactly when `make lock` must still work.
LOCK_ARGS ?=
LOCK_VENV := .run/lock-venv
UV_COMPILE := $(LOCK_VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	--quiet
lock:
	mkdir -p .run
	uv_pin=$$(python3 -c 'import tomllib; print(next(r for r in tomllib.load(open("pyproject.toml", "rb")) \
	  ["project"]["optional-dependencies"]["dev"] if r.startswith("uv==")))'); \
	$(LOCK_VENV)/bin/uv --version 2>/dev/null | grep -q "^uv $${uv_pin#uv==} " || { python3 -m venv --clear $(LOCK_VENV) \
	  && $(LOCK_VENV)/bin/pip install -q --disable-pip-version-check "$$uv_pin"; }
	$(UV_COMPILE) $(LOCK_ARGS) --extra dev -o requirements-dev.lock
	$(UV_COMPILE) -c requirements-dev.lock -o requirements.lock

# Every benchmark measures its baselines in the same run, interleaved, and prints medians with their spread
# and the ratios (bench/README.md).
bench: setup
	mkdir -p '$(BENCH_OUT)'
	@export TEL_TEST_DATABASE_URL='$(TEL_TEST_DATABASE_URL)' TEL_TEST_REDIS_URL='$(TEL_TEST_REDIS_URL)'; \
	$(PYTHON) bench/throughput.py -n 600 --rounds 3 | tee '$(BENCH_OUT)/throughput.txt'; \
	$(PYTHON) bench/sandbox_latency.py -n 30 -m 20 --rounds 3 --pool 2 | tee '$(BENCH_OUT)/sandbox_latency.txt'; \
	$(PYTHON) bench/e2e_latency.py -n 20 -m 20 --rounds 3 | tee '$(BENCH_OUT)/e2e_latency.txt'

# Ten minutes of moderate load on the whole stack; fails on memory, process, fd or container leaks.
soak: setup
	mkdir -p '$(BENCH_OUT)'
	@export TEL_TEST_DATABASE_URL='$(TEL_TEST_DATABASE_URL)' TEL_TEST_REDIS_URL='$(TEL_TEST_REDIS_URL)'; \
	$(PYTHON) bench/soak.py --minutes $(SOAK_MINUTES) | tee '$(BENCH_OUT)/soak.txt'

# CycloneDX SBOMs (docs/security.md, "Image scanning"): the Python environment with cyclonedx-bom, and the
# service image (built offline as tests/e2e/test_image.py does) with its Debian packages and venv.
# The tools live in a venv of their own (pyproject's `sbom` extra; see the comment there).
SBOM_VENV := .run/sbom-venv
sbom: setup
	mkdir -p '$(SBOM_DIR)'
	test -x $(SBOM_VENV)/bin/cyclonedx-py || { python3 -m venv $(SBOM_VENV) && $(SBOM_VENV)/bin/pip install -q \
	  --disable-pip-version-check $$(python3 -c 'import tomllib; print(" ".join( \
	  tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["sbom"]))'); }
	$(SBOM_VENV)/bin/cyclonedx-py environment --pyproject pyproject.toml --of JSON --output-reproducible \
	  --no-validate -o '$(SBOM_DIR)/python-environment.cdx.json' $(PYTHON)
	bash scripts/build-base-image.sh
	docker build -q --build-arg BASE_IMAGE='$(BASE_IMAGE)' -t '$(SBOM_IMAGE)' . >/dev/null
	$(SBOM_VENV)/bin/python scripts/image_sbom.py '$(SBOM_IMAGE)' '$(SBOM_DIR)/image.cdx.json'

# `sam build -t serverless/template.yaml` (BuildMethod: makefile) calls this with ARTIFACTS_DIR: the project
# and its dependencies as Lambda's python3.11 (x86_64) loads them.
build-AutomatedTaskExecutorFunction:
	python3 -m pip wheel --quiet --no-deps -w "$(ARTIFACTS_DIR)/.wheel" .
	python3 -m pip install --quiet --target "$(ARTIFACTS_DIR)" --platform manylinux2014_x86_64 \
	  --implementation cp --python-version 3.11 --only-binary=:all: "$(ARTIFACTS_DIR)"/.wheel/*.whl
	rm -rf "$(ARTIFACTS_DIR)/.wheel"

clean: services-stop
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache *.egg-info '$(BENCH_OUT)' '$(SBOM_DIR)'
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
