#!/usr/bin/env bash
# Side-by-side benchmark: portcullis, nginx and HAProxy as reverse proxies in front
# of one nginx backend, plus "direct to backend" as the ceiling. See docs/benchmarks.md.
#   bench/run.sh [--rounds N] [--duration S] [--scenarios ka64,ka1,...] [--out FILE]
# Reliability half (docs/benchmarks.md): the first word picks the script instead of run.py.
#   bench/run.sh failover [--duration S]   bench/run.sh idle [--conns N]   bench/run.sh soak [--minutes M]
# Instructions per request under callgrind, for A/B comparisons of builds on a noisy machine:
#   bench/run.sh instructions [--bin OLD --bin NEW] [--scenario ka64|browser|h2|close] [--top K] [--peers] [--cache-sim] [--atomics]
#   (--peers: nginx, nginx-azurelog, HAProxy, haproxy-nolog, nginx-bare, haproxy-bare and portcullis without
#   its access log, counted the same way)
# What each proxy of run.py sends its backend and its client, checked to be the same fields:
#   bench/run.sh fields
# The same in wall-clock time, two builds side by side (req/s and CPU per 100k, rounds alternating):
#   bench/run.sh ab --bin OLD --bin NEW [--scenario ka64|h2|...] [--rounds 6]
# User-space time between system calls at one connection (perf tracepoints; section 2):
#   bench/run.sh gaps [portcullis[=BIN] nginx haproxy]
# Profile-guided build (bench/pgo.py, docs/benchmarks.md §6), alone or run beside the plain build:
#   bench/run.sh pgo   bench/run.sh --pgo [--rounds N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for b in nginx haproxy wrk h2load taskset openssl valgrind curl; do command -v "$b" >/dev/null || need+=("$b"); done
python3 -c 'import h2' 2>/dev/null || need+=(python3-h2)  # the soak's HTTP/2 load and hostile clients
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq nginx haproxy wrk nghttp2-client util-linux openssl valgrind python3-h2 curl
fi
# A python3 that is not the system's (pyenv, a venv) does not see python3-h2.
python3 -c 'import h2' 2>/dev/null || python3 -m pip install -q h2
cargo build --release --quiet
script=run.py
case "${1:-}" in failover|idle|soak|instructions|pgo|ab|gaps|fields) script="$1.py"; shift ;; esac
if [ "$script" = run.py ] && [[ " $* " == *" --pgo "* ]]; then
  python3 bench/pgo.py
fi
exec python3 "bench/$script" "$@"
