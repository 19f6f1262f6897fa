# Fracture Portal: `make run` (set up and serve the embedded portal), `make test` (the test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# `make run` is the embedded default whatever the shell exports: SQLite, local media, in-process
# tasks, local-memory cache. The full stack is docker-compose.yml (README: "Full-stack mode").
RUN_ENV := env -u DATABASE_URL -u CELERY_BROKER_URL -u REDIS_CACHE_URL DJANGO_DEBUG=1
# The tests use real PostgreSQL and Redis (fracture_portal/settings_test.py reads PGHOST/PGPORT,
# REDIS_HOST/REDIS_PORT, or DATABASE_URL/CELERY_BROKER_URL/REDIS_CACHE_URL when set).
PYTEST_ARGS ?=

.PHONY: run test lint format services install install-dev clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "installing python3-venv"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  ($$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq python3-venv python3-pip) >/dev/null; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

run: $(VENV)/.runtime
	@mkdir -p var/static var/media
	$(RUN_ENV) $(BIN)/python manage.py migrate --noinput
	$(RUN_ENV) $(BIN)/python manage.py demo_setup
	@echo "Fracture Portal: http://$(HOST):$(PORT)/  (sign in with a demo account above; Ctrl-C stops)"
	$(RUN_ENV) $(BIN)/python manage.py runserver --noreload $(HOST):$(PORT)

services:
	bin/ensure-services

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	@mkdir -p var
	$(RUN_ENV) $(BIN)/python manage.py makemigrations --check --dry-run

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Services first (installed and started here if missing), then static checks, then every test
# (slow, integration and browser included). With CI=true a skipped test fails the run.
# Local pytest runs keep the test database between runs (--reuse-db, set in conftest.py: migrations
# still apply); `make test` always builds it afresh, as on a clean clone.
test: $(VENV)/.dev services lint
	$(BIN)/pytest --create-db $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .import_linter_cache
