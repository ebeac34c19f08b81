#!/usr/bin/env bash
# Switchboard against Pipecat on the same Twilio load (tests/all/bridge_bench.rs): makes
# Pipecat's venv (bench/pipecat/.venv, pinned in requirements.txt), then runs the benchmark.
# Defaults: 50 and 200 concurrent calls of 60 s, each configuration 3 times, medians reported;
# override with BENCH_CALLS, BENCH_SECS, BENCH_REPEAT, BENCH_TARGETS. Needs espeak-ng and sox.
#   bench/pipecat/run.sh
#   BENCH_CALLS=5 BENCH_SECS=15 BENCH_REPEAT=1 bench/pipecat/run.sh   # a smoke run
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
cd "$root"
PIPECAT_PYTHON="$venv/bin/python" \
BENCH_CALLS="${BENCH_CALLS:-50,200}" \
BENCH_SECS="${BENCH_SECS:-60}" \
BENCH_REPEAT="${BENCH_REPEAT:-3}" \
  nice -n "${BENCH_NICE:-0}" cargo test --release -p switchboard-tests --test all -- \
  --ignored --nocapture bridge_bench::
