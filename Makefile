# boxoffice: everything a new machine needs is installed by these targets into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit check layout bench up down clean serve functions-vendor web

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "boxoffice needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP) node_modules web

## firebase-tools (the Auth emulator) from the npm registry, pinned by package-lock.json.
node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch node_modules

## The storefront and dashboard pages: esbuild bundles web/src (Firebase Web SDK from node_modules)
## into web/public/dist, which `boxoffice serve` serves at /app/.
WEB_DIST := web/public/dist/.built
$(WEB_DIST): node_modules web/build.mjs $(wildcard web/src/*.js)
	node web/build.mjs
	touch $@

web: $(WEB_DIST)

## A flash sale on the local emulators: 5,000 buyers for 1,000 tickets from 8 app instances (OS
## processes) through the admission queue and one allocator process; report + plot in reports/.
## Look at: sold / sold out / errors, sales/s, p99, FIFO violations and sales per commit.
## `make demo API=1`: the same sale also through the HTTP API (served for the run, with the Auth
## emulator), side by side with the library, with the API layer's overhead.
demo: $(STAMP) $(if $(filter 1,$(API)),node_modules)
ifeq ($(API),1)
	$(BIN)/boxoffice simulate --via-api --compare-library --buyers 5000 --tickets 1000 --concurrency 100 \
		--json reports/demo-api.json
else
	$(BIN)/boxoffice simulate --buyers 5000 --tickets 1000 --concurrency 200 --instances 8 \
		--json reports/demo.json --plot reports/demo.png
endif

## Every test: unit tests, then integration and end-to-end tests on the real emulators
## (started by the test session itself, stopped at its end).
test: $(STAMP) node_modules web
	$(BIN)/python -m pytest -q

## The gates every change must pass: lint (ruff), types (mypy --strict on src/), layers and
## no import cycles (import-linter; contracts in pyproject.toml). No emulator needed.
check: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

## Copy the "where things live" map of docs/design.md into the README.
layout:
	$(PYTHON) scripts/sync_layout.py

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

## The queued sale at 1, 8 and 40 app instances vs the one-purchase-per-commit ceiling (many minutes).
bench: $(STAMP)
	$(BIN)/boxoffice bench --instances 1,8,40 --json reports/bench.json

up: $(STAMP) node_modules
	$(BIN)/boxoffice dev up

## The HTTP API on http://127.0.0.1:8080 against the dev stack (started if needed); docs at /docs,
## the storefront at /app/, the organiser dashboard at /app/dashboard.html.
serve: up web
	$(BIN)/boxoffice serve --port 8080

down: $(STAMP)
	$(BIN)/boxoffice dev down

## Cloud Functions deploys the functions/ directory only: copy the boxoffice package into it
## (firebase.json runs this as the predeploy hook of `firebase deploy --only functions`).
functions-vendor:
	rm -rf functions/boxoffice
	cp -r src/boxoffice functions/boxoffice
	find functions/boxoffice -name __pycache__ -prune -exec rm -rf {} +

clean:
	rm -rf $(VENV) .boxoffice reports .pytest_cache node_modules functions/boxoffice
