#!/usr/bin/env bash
# HTTP enqueue benchmark: a release `spool serve` on a temporary SQLite file (durability full,
# workers off so the figure is the API alone), driven by wrk over loopback with keep-alive.
# Usage: bench/http.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-64}
seconds=${2:-20}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
swift build -c release --product spool >/dev/null
dir=$(mktemp -d)
port=18765
.build/release/spool serve --database "$dir/bench.sqlite" --port "$port" --no-workers --log-level warning &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
wrk -t2 -c"$connections" -d"${seconds}s" --latency -s bench/enqueue.lua "http://127.0.0.1:$port"
echo "jobs stored: $(curl -s "http://127.0.0.1:$port/v1/queues/default" | sed -E 's/.*"depth":([0-9]+).*/\1/')"
