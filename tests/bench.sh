#!/usr/bin/env bash
# Benchmarks (not part of the test run): builds in release, starts the server with the limits
# off and the offline engine at full speed, and runs the load generator's scenarios.
#   tests/bench.sh [sqlite|postgres] [users] [idle-connections]
# Results: target/bench/*.json, and the tables on stdout (docs/benchmarks.md records them).
set -euo pipefail
cd "$(dirname "$0")/.."
db="${1:-sqlite}"
users="${2:-100}"
idle="${3:-5000}"
# Each connection is a file descriptor on both sides: raise the limit where allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --bins
out=target/bench
mkdir -p "$out"
secret=bench-secret-0123456789abcdef
port=3399
data=$(mktemp -d)
case "$db" in
  sqlite) url="sqlite://$data/bench.db" ;;
  postgres)
    name="postchat_bench_$$"
    psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "CREATE DATABASE $name"
    url="postgres://postgres@127.0.0.1:5432/$name" ;;
  *) echo "usage: $0 [sqlite|postgres] [users] [idle-connections]" >&2; exit 2 ;;
esac
HOST=127.0.0.1 PORT=$port DATA_DIR="$data" DATABASE_URL="$url" DATABASE_MAX_CONNECTIONS=20 \
  JWT_SECRET=$secret RATE_LIMIT_MESSAGES_PER_MINUTE=0 RATE_LIMIT_CONNECTIONS_PER_MINUTE=0 \
  MAX_SOCKETS_PER_USER=0 DAILY_TOKEN_BUDGET=0 LOCAL_AI_PACING_MS=0 SUMMARY_EVERY=0 RUST_LOG=warn \
  ./target/release/postchat > "$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
lg() { ./target/release/loadgen --addr "127.0.0.1:$port" --jwt-secret $secret --server-pid $server "$@"; }
lg --json "$out/chat-$db-$users.json" chat --users "$users" --seconds 20
lg --json "$out/fanout-$db.json" fanout --sockets 100 --seconds 10
lg --json "$out/idle-$db-$idle.json" idle --connections "$idle" --hold 3
