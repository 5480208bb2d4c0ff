#!/usr/bin/env bash
# Every figure the issues ask for, one after another on this machine, each writing reports/*.json.
# Run on a quiet machine (nothing else busy): the figures are only comparable within one run.
# Each command starts its own emulators (unless FIRESTORE_EMULATOR_HOST etc. are set) and stops them.
# docs/figures.md reports the runs of 25 Nov 2026 23:01-23:14 (main 4b0f440) and, for the browser,
# of 21:15 (main 3406d52).
set -uo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin/boxoffice
mkdir -p reports
run() { echo "== $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; "$@"; echo "exit $?"; }

# Purchasing (issue 8): the one-purchase-per-commit ceilings, the queued sale (admission queue +
# batch allocator) at 1, 8 and 40 app instances (OS processes), and the direct-sharded baseline;
# add --single-document for the naive baselines (slow).
run $B bench --buyers 5000 --tickets 1000 --concurrency 200 --deadline 10 --instances 1,8,40 --json reports/bench.json
# The same sale at 8 instances with answers polled every 0.25 s instead of 0.1 s.
BOXOFFICE_ANSWER_POLL_S=0.25 run $B bench --buyers 5000 --tickets 1000 --concurrency 200 --deadline 10 --instances 8 --no-direct --json reports/bench-poll025.json
# One allocator alone on a backlog: its writes staged by EncodedWriteBatch and by the library.
run .venv/bin/python benchmarks/allocator_turns.py --rounds 4
# Background work (issue 9): commit->publish, commit->email and summary lags during the sale (worker
# parts as processes), then the pipeline's capacity on a backlog with one worker and with two, and
# the emulator's raw consume rate, all in one run; then the same with the relay's listener, and
# with the inventory trigger's listener.
run $B simulate --pipeline --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline.json
BOXOFFICE_RELAY_LISTEN=1 run $B simulate --pipeline --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline-listener.json
# The same with the inventory trigger's listener instead of its polling (the default since issue 9).
BOXOFFICE_INVENTORY_LISTEN=1 run $B simulate --pipeline --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline-inventory-listener.json
# Ticket types and seats (issue 13): the seated sale and the unseated typed sale of the same size.
run $B simulate --seated --buyers 5000 --tickets 2000 --concurrency 200 --instances 8 --seed 7 --json reports/seated.json
run $B simulate --types --buyers 5000 --tickets 2000 --concurrency 200 --instances 8 --seed 7 --json reports/typed.json
# API with 4 worker processes vs the library, concurrency 200 (issue 8's API figure).
run $B simulate --via-api --compare-library --api-workers 4 --buyers 5000 --tickets 1000 --concurrency 200 --json reports/via-api-4.json
# Storefront (issue 11): summary staleness in the page and click-to-order, headless Chromium.
run .venv/bin/python -m boxoffice.loadtest.browser figures --json reports/browser-figures.json
