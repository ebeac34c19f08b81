#!/usr/bin/env bash
# Fuzz the parsers that read bytes from outside (issue 35): `bench/fuzz.sh TARGET SECONDS`, or
# `bench/fuzz.sh all SECONDS` for every target in turn (fuzz/src/lib.rs says what each one
# feeds where). Installs cargo-fuzz when missing; builds on stable Rust with the sanitizer off
# (safe Rust needs none), optimised, with debug assertions and overflow checks.
#
# Each run starts from the saved corpus fuzz/corpus/TARGET plus a working corpus
# fuzz/target/corpus/TARGET (not committed; it keeps growing from run to run). With FUZZ_SAVE=1
# the inputs of the working corpus that reach code edges the saved one does not are added to the
# saved one (libFuzzer's set-cover merge, on edges only so that it stays small), to commit. A crash stops that target's run: its input
# is in fuzz/artifacts/TARGET/ (add it to the saved corpus once fixed, and a unit test next to
# the parser). Prints per target the executions, coverage (libFuzzer's cov: edges, ft:
# features) and the outcome; exits 1 if any crashed. FUZZ_JOBS runs that many fuzzing
# processes per target (default 1; the machine is shared).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

usage() {
  echo "usage: bench/fuzz.sh TARGET|all SECONDS   (targets: $(cargo fuzz list 2>/dev/null | tr '\n' ' '))" >&2
  exit 2
}
[[ $# -eq 2 && $2 =~ ^[0-9]+$ ]] || usage

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if [[ $1 == all ]]; then
  mapfile -t targets < <(cargo fuzz list)
else
  targets=("$1")
fi
seconds="$2"
jobs="${FUZZ_JOBS:-1}"
flags=(-max_total_time="$seconds" -print_final_stats=1)
if [[ $jobs -gt 1 ]]; then
  flags+=(-jobs="$jobs" -workers="$jobs")
fi

log="$(mktemp -d)"
trap 'rm -rf "$log"' EXIT
status=0
results=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "target/corpus/$target"
  nice -n 15 cargo fuzz build -s none "$target"
  outcome=ok
  if ! nice -n 15 cargo fuzz run -s none "$target" "target/corpus/$target" "corpus/$target" \
    -- "${flags[@]}" >"$log/$target" 2>&1; then
    outcome="CRASH (see fuzz/artifacts/$target/)"
    status=1
    tail -n 40 "$log/$target" >&2
  fi
  # With -jobs the workers log to fuzz-N.log in the current directory.
  if [[ $jobs -gt 1 ]]; then
    cat fuzz-*.log >>"$log/$target" 2>/dev/null || true
    rm -f fuzz-*.log
  fi
  executions="$(grep -h 'stat::number_of_executed_units' "$log/$target" | awk '{s += $2} END {print s + 0}')"
  coverage="$(grep -hE '^#[0-9]+' "$log/$target" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -n 1)"
  if [[ ${FUZZ_SAVE:-0} == 1 ]]; then
    nice -n 15 cargo fuzz run -s none "$target" "corpus/$target" "target/corpus/$target" \
      -- -set_cover_merge=1 -use_counters=0 -use_value_profile=0 >"$log/$target.merge" 2>&1
  fi
  files="$(find "corpus/$target" -type f | wc -l)"
  results+=("$(printf '%-14s %12s execs  %-22s saved corpus %5s files  %s' \
    "$target" "$executions" "${coverage:-cov: ? ft: ?}" "$files" "$outcome")")
done
printf '%s\n' "${results[@]}"
exit "$status"
