#!/usr/bin/env bash
# Web calls against SIP calls on one host (tests/all/webrtc_bench.rs), issue 27's benchmark:
# N concurrent web calls from `webrtc-load` (tests/bin/webrtc_load.rs) and N SIP calls in the
# same run, audio both ways, the fake OpenAI model behind the agent. Defaults: 300 calls of
# 60 s, 3 repeats, medians reported; override with BENCH_CALLS, BENCH_SECS, BENCH_REPEAT.
# Needs espeak-ng and sox.
#   bench/webrtc.sh
#   BENCH_CALLS=20 BENCH_SECS=20 BENCH_REPEAT=1 bench/webrtc.sh   # a smoke run
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
BENCH_CALLS="${BENCH_CALLS:-300}" \
BENCH_SECS="${BENCH_SECS:-60}" \
BENCH_REPEAT="${BENCH_REPEAT:-3}" \
  nice -n "${BENCH_NICE:-0}" cargo test --release -p switchboard-tests --test all -- \
  --ignored --nocapture webrtc_bench::web_calls_against_sip_calls
