# chatpulse: `make help` lists the targets. Every target uses .venv and creates it when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)
export DEBIAN_FRONTEND := noninteractive
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install lint format chromium test test-unit test-integration run bench stack-up stack-down stack-status clean

help: ## Show this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(UV):
	@echo "==> bootstrapping uv $(UV_VERSION) into $(TOOLS)/"
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/.installed: pyproject.toml uv.lock | $(UV)
	@echo "==> installing chatpulse and its dev tools into $(VENV)/ (from uv.lock)"
	$(UV) sync --frozen
	@touch $@

install: $(BIN)/.installed ## Create .venv with chatpulse (editable) and the dev tools

lint: install ## ruff (lint + format check) and mypy --strict on the package
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

test-unit: install ## Unit tests only (no network, seconds)
	$(BIN)/pytest tests/unit

chromium: ## Install Debian's chromium (browser tests) and NSS's certutil (to trust a CA in them)
	@test -x /usr/bin/chromium -a -x /usr/bin/certutil || { $(SUDO) apt-get install -y chromium libnss3-tools || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium libnss3-tools; }; }

test: install chromium ## All tests: unit, then integration against a real Kafka + Cassandra test stack it starts
	$(BIN)/pytest tests/unit
	$(BIN)/pytest tests/integration --durations=25

run: install ## Everything at once: stack, fake chat, ingest, processor, API (CHANNELS=a,b for real Twitch)
	$(BIN)/chatpulse up $(if $(CHANNELS),--channels $(CHANNELS))

bench: install ## Run every benchmark in bench/, write bench/results/ (QUICK=1 for short runs)
	$(BIN)/python bench/run_all.py $(if $(QUICK),--quick)

stack-up: install ## Start the local Kafka + Cassandra (downloads jars once)
	$(BIN)/chatpulse stack up

stack-down: install ## Stop the local stack
	$(BIN)/chatpulse stack down

stack-status: install ## Show the local stack
	$(BIN)/chatpulse stack status

clean: ## Remove the virtual environments and build outputs (not the jar cache or stack data)
	rm -rf $(VENV) $(TOOLS) build .pytest_cache .mypy_cache .ruff_cache
