#!/usr/bin/env bash
# Every figure the issues ask for, one after another on this machine, each writing reports/*.json.
# Run on a quiet machine (nothing else busy): the figures are only comparable within one run.
# Each command starts its own emulators (unless FIRESTORE_EMULATOR_HOST etc. are set) and stops them.
set -uo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin/boxoffice
mkdir -p reports
run() { echo "== $*"; "$@"; echo "exit $?"; }

# Purchasing: the uncontended ceiling, sharded, and both single-document baselines, one emulator.
run $B bench --buyers 5000 --tickets 1000 --concurrency 200 --deadline 10 --json reports/bench.json
# The shard router: one app instance vs every buyer on its own (no local coordination).
run $B simulate --buyers 300 --tickets 100 --shards 10 --seed 1 --json reports/router-one-instance.json
run $B simulate --buyers 300 --tickets 100 --shards 10 --seed 1 --instances 300 --json reports/router-no-coordination.json
# Real-time inventory: 20% cancellations, the trigger's lag and event-document writes per second.
run $B simulate --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/inventory.json
# Messaging: messages handled per second, commit-to-email lag, raw consume rate of the emulator.
run $B simulate --pipeline --buyers 5000 --tickets 1000 --json reports/pipeline.json
# The worker's scale-out: the same sale with one worker, then two side by side (each part its own
# process; compare handled_per_s and the lags of the two reports).
run $B simulate --pipeline --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline-1-worker.json
run $B simulate --pipeline --pipeline-workers 2 --buyers 5000 --tickets 1000 --cancel-share 0.2 --json reports/pipeline-2-workers.json
# API: the purchase endpoint side by side with the library.
run $B simulate --via-api --compare-library --buyers 5000 --tickets 1000 --concurrency 100 --json reports/via-api.json
