# boxoffice: everything a new machine needs is installed by these targets into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit bench up down clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "boxoffice needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## A flash sale on the local emulators: 5,000 buyers for 1,000 tickets, report + plot in reports/.
demo: $(STAMP)
	$(BIN)/boxoffice simulate --buyers 5000 --tickets 1000 --concurrency 200 \
		--json reports/demo.json --plot reports/demo.png

## Every test: unit tests, then integration and end-to-end tests on the real emulators
## (started by the test session itself, stopped at its end).
test: $(STAMP)
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

## Sharded purchases vs the uncontended ceiling and the single-document baselines (several minutes).
bench: $(STAMP)
	$(BIN)/boxoffice bench --json reports/bench.json

up: $(STAMP)
	$(BIN)/boxoffice dev up

down: $(STAMP)
	$(BIN)/boxoffice dev down

clean:
	rm -rf $(VENV) .boxoffice reports .pytest_cache
