#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each one for SECONDS_PER_TARGET
# (default 20) on a temporary copy of its seed corpus, so the tracked corpus
# does not grow. Exits non-zero when a target crashes (panic, failed check,
# timeout or out-of-memory) and prints the saved input and how to replay it.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z
# flags. No sanitizer (the crate forbids unsafe code; panics are what we look
# for), release build with debug assertions (overflow checks on), and a target
# dir of its own (fuzz/target) so it never waits on the main target/ lock.
set -euo pipefail

secs=${1:-20}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: bash fuzz/run.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi

cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

flags=(--sanitizer none --release --debug-assertions --target-dir fuzz/target)
cargo fuzz build "${flags[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for t in $(cargo fuzz list); do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  cp fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  log="$work/$t.log"
  marker="$work/$t.start"
  touch "$marker"
  echo "fuzz: $t for ${secs}s"
  if cargo fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    failed+=("$t")
    echo "fuzz: $t failed; its output without the progress lines:"
    grep -v -E '^(#[0-9]+[[:space:]]|INFO: |WARNING: Failed to find function)' "$log" || true
    found=$(find "fuzz/artifacts/$t" -type f -newer "$marker" 2>/dev/null || true)
    if [ -n "$found" ]; then
      echo "fuzz: $t: crashing input(s):"
      for f in $found; do
        echo "  $f"
        echo "  replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t $f"
      done
    fi
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  summary+=("$(printf '%-15s %-5s %10s runs %8s exec/s' "$t" "$result" "${runs:-?}" "${rate:-?}")")
done

echo "fuzz: summary (${secs}s per target)"
printf '  %s\n' "${summary[@]}"
ntargets=${#summary[@]}
echo "fuzz: $((ntargets - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
