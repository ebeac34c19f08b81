#!/usr/bin/env bash
# Issue 28's author timings, as a new user meets them, per language (rust python js by default;
# BENCH_LANGS to choose; BENCH_REPEAT runs each, default 3):
#   new → greeting: `switchboard new`, `switchboard deploy` into a running host's agents folder,
#     a call (`switchboard call`) until the host has spoken the greeting;
#   edit → live: under `switchboard dev`, one edit of the greeting saved, until the new version is
#     live; and build done → live (the host's own part, after cargo or the componentizer).
# The first-ever toolchain install is excluded (`.ci/setup` does it); the host uses the offline
# provider; traffic stays on 127.0.0.1. Uses target/release/switchboard or $SWITCHBOARD_BENCH_BIN.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [[ -z ${SWITCHBOARD_BENCH_BIN:-} ]]; then
  cargo build --release --quiet -p switchboard
fi
bin="${SWITCHBOARD_BENCH_BIN:-$root/target/release/switchboard}"
langs=(${BENCH_LANGS:-rust python js})
repeat="${BENCH_REPEAT:-3}"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# Seconds since the epoch of a log line's RFC 3339 timestamp.
stamp() { date -d "$(cut -d' ' -f1 <<<"$1")" +%s.%N; }
# Wait (at most $3 s) until file $1 has a line matching $2 after line $4 (default 0); prints it.
wait_line() {
  local deadline=$((SECONDS + $3)) line
  while ((SECONDS < deadline)); do
    line=$(tail -n +"$((${4:-0} + 1))" "$1" | grep -m1 -e "$2" || true)
    if [[ -n $line ]]; then echo "$line"; return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1" >&2
  tail -20 "$1" >&2
  return 1
}

run_one() {
  local lang=$1 run=$2 dir="$work/$lang-$run"
  mkdir -p "$dir"
  local sip rtp
  sip=$(free_port)
  rtp=$((20000 + RANDOM % 20000 / 2 * 2))
  cat >"$dir/switchboard.toml" <<TOML
data-dir = "$dir/data"
[sip]
udp-listen = "127.0.0.1:$sip"
tcp-listen = "127.0.0.1:$sip"
[http]
listen = "127.0.0.1:0"
[calls]
rtp-port-min = $rtp
rtp-port-max = $((rtp + 40))
[agents]
dir = "$dir/agents"
cache-dir = "$work/cache"
[agents.python]
max-instances = 4
memory-mb = 128
[agents.js]
max-instances = 4
memory-mb = 128
TOML
  local cfg="$dir/switchboard.toml" log="$dir/host.log" project="$dir/hello"
  RUST_LOG="info,rsipstack=warn,switchboard::call=debug" NO_COLOR=1 \
    "$bin" run --config "$cfg" >"$dir/host.out" 2>"$log" &
  pids+=($!)
  local host=$!
  wait_line "$dir/host.out" "(default)" 60 >/dev/null

  local t0 t1
  t0=$(now)
  "$bin" new hello --lang "$lang" --number 5077 --dir "$project" >/dev/null
  "$bin" deploy "$project" --config "$cfg" >/dev/null 2>"$dir/deploy.log"
  wait_line "$log" "agent version live.*agent=\"hello\"" 120 >/dev/null
  "$bin" call "sip:5077@127.0.0.1:$sip" --hangup-after 8 >/dev/null 2>&1 &
  pids+=($!)
  wait_line "$log" "Hello, this is" 60 >/dev/null
  t1=$(now)
  kill "$host" 2>/dev/null || true
  wait "$host" 2>/dev/null || true

  # The edit loop: `switchboard dev` on the project, one saved edit of the greeting.
  local dlog="$dir/dev.log"
  RUST_LOG="info" NO_COLOR=1 "$bin" dev "$project" --config "$cfg" >/dev/null 2>"$dlog" &
  pids+=($!)
  local dev=$!
  wait_line "$dlog" "agent version live.*agent=\"hello\"" 120 >/dev/null
  sleep 1
  local before edit built live
  before=$(wc -l <"$dlog")
  local source
  source=$(grep -rl --include='*.rs' --include='*.py' --include='*.js' "Hello, this is" "$project" \
    | grep -v -e /target/ -e node_modules | head -1)
  edit=$(now)
  sed -i 's/Hello, this is/Hi there, this is/' "$source"
  built=$(wait_line "$dlog" "rebuilt and installed" 180 "$before")
  live=$(wait_line "$dlog" "agent version live.*agent=\"hello\"" 60 "$before")
  kill "$dev" 2>/dev/null || true
  wait "$dev" 2>/dev/null || true
  python3 - "$lang" "$t0" "$t1" "$edit" "$(stamp "$built")" "$(stamp "$live")" <<'PY'
import sys
lang, t0, t1, edit, built, live = sys.argv[1], *map(float, sys.argv[2:])
print(f"{lang:7} new→greeting {t1 - t0:6.1f} s   edit→live {live - edit:6.2f} s   "
      f"build done→live {(live - built) * 1000:7.0f} ms")
PY
}

for lang in "${langs[@]}"; do
  for run in $(seq 1 "$repeat"); do
    run_one "$lang" "$run"
  done
done
