#!/usr/bin/env bash
# Every figure the issues ask for, one after another on this machine, each writing reports/*.json.
# Run on a quiet machine (nothing else busy): the figures are only comparable within one run.
# Each command starts its own emulators (unless FIRESTORE_EMULATOR_HOST etc. are set) and stops them.
set -uo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin/boxoffice
mkdir -p reports
run() { echo "== $*"; "$@"; echo "exit $?"; }

# Purchasing (issue 8): the uncontended one-purchase-per-commit ceiling, the queued sale (admission
# queue + batch allocator) at 1, 8 and 40 app instances (OS processes), and the direct-sharded
# baseline, one emulator, one run; add --single-document for the naive baselines (slow).
run $B bench --buyers 5000 --tickets 1000 --concurrency 200 --deadline 10 --instances 1,8,40 --json reports/bench.json
# Real-time inventory: 20% cancellations, the trigger's lag and event-document writes per second.
run $B simulate --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/inventory.json
# Messaging (issue 9): commit->publish, commit->email and summary lags during the sale (worker parts
# as processes), then the pipeline's capacity on a backlog of the sale's message mix with one worker
# and with two, side by side with the emulator's raw consume rate, all in one run.
run $B simulate --pipeline --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline.json
# The worker's scale-out: the same sale with one worker, then two side by side (each part its own
# process; compare handled_per_s and the lags of the two reports).
run $B simulate --pipeline --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline-1-worker.json
run $B simulate --pipeline --pipeline-workers 2 --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline-2-workers.json
# API: the purchase endpoint side by side with the library.
run $B simulate --via-api --compare-library --buyers 5000 --tickets 1000 --concurrency 100 --json reports/via-api.json
# API with 4 worker processes vs the library with 4 instances, concurrency 200 (issue 8's API figure).
run $B simulate --via-api --compare-library --api-workers 4 --buyers 5000 --tickets 1000 --concurrency 200 --json reports/via-api-4.json
