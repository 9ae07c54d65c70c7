#!/usr/bin/env bash
# Benchmarks (not part of the test run): builds in release, then for each scenario starts a fresh
# server with the limits off and the offline engine at full speed, and runs the load generator.
#   tests/bench.sh [sqlite|postgres] [users ...]
#     chat at each number of users (default: 10 50 100 200 500), 15 s each after 2 s of warm-up;
#     500 users pausing $THINK ms between answers (default: 2000 1000 750 500 250: latency at a
#     load below saturation); fanout to 100 sockets; idle at each of $IDLE connections (default:
#     2000 8000 16000 20000; each at most the server's connection cap, the open-file limit less
#     a twentieth, less 100: both processes need one per connection), and at 8000 with a browser's
#     headers.
#   tests/bench.sh soak [sqlite|postgres] [minutes]
#     the long run instead: 2,000 idle sockets and 200 users pausing 1 s between answers, at the
#     default pacing, for 30 minutes (default), memory and answers/s sampled every minute.
#   tests/bench.sh stored [messages]
#     chat at 100 users on PostgreSQL, on an empty database and on one holding 1,000,000 (default)
#     stored messages of 2,000 sessions: throughput must not depend on what is stored.
#   tests/bench.sh cluster [users ...]
#     cluster mode's cost (PostgreSQL), on one process without Redis, one with a redis-server of
#     the script's own, and three sharing it (the users' sockets spread over them): 100 users
#     offering $RATE_CLUSTER answers/s in all (default 300, an open loop below saturation), then
#     each number of users (default: 100 500) back to back (saturation). Per answer: CPU of the
#     servers and Redis (/proc and Redis's INFO), Redis commands and bytes. Then three processes
#     with each session also watched from another (the cross-process token delay), back to back
#     and paced at $THINK_CLUSTER ms (default 1000).
#   tests/bench.sh node [runs]
#     this server (SQLite) against the Node.js reference (tools/node-reference: socket.io 4.8 with
#     the same events, an in-memory store), 100 users back to back for 15 s, one after the other,
#     $runs times (default 3); then idle memory per connection at 8,000 on each. Prints the
#     token events/s of each pair and their ratio.
# Results: target/bench/*.json, and the tables on stdout (docs/benchmarks.md records them).
# POSTCHAT_BIN=path runs another build of the server (an earlier commit, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=scenarios
case "${1:-}" in soak | stored | cluster | node) mode=$1; shift ;; esac
if [ "$mode" = node ]; then runs="${1:-3}"; set -- sqlite; fi
if [ "$mode" = stored ]; then set -- postgres "${1:-1000000}"; fi
if [ "$mode" = cluster ]; then set -- postgres "${@:-100 500}"; fi
db="${1:-sqlite}"
shift || true
users=("${@:-10 50 100 200 500}")
read -r -a users <<< "${users[*]}"
read -r -a idle <<< "${IDLE:-2000 8000 16000 20000}"
read -r -a think <<< "${THINK:-2000 1000 750 500 250}"
# Each connection is a file descriptor on both sides: raise the limit where allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max_idle=$(($(ulimit -n) * 19 / 20 - 100))
cargo build --release --locked --workspace --bins
out=target/bench
mkdir -p "$out"
secret=bench-secret-0123456789abcdef-0123456789
port=3399
case "$db" in sqlite | postgres) ;; *) echo "usage: $0 [sqlite|postgres] [users ...]" >&2; exit 2 ;; esac

server=""
servers=()
pg_db=""
# start_server [pacing ms] [port] [more env]: a fresh server (and database, unless one is
# already made for this scenario); the offline engine at full speed unless told otherwise.
start_server() {
  local data url pacing="${1:-0}" at="${2:-$port}" extra="${3:-}"
  data=$(mktemp -d)
  if [ "$db" = postgres ]; then
    if [ -z "$pg_db" ]; then
      pg_db="postchat_bench_$$_$RANDOM"
      psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "CREATE DATABASE $pg_db"
    fi
    url="postgres://postgres@127.0.0.1:5432/$pg_db"
  else
    url="sqlite://$data/bench.db"
  fi
  # shellcheck disable=SC2086
  env $extra HOST=127.0.0.1 PORT=$at CORS_ORIGINS=http://localhost:5173 DATA_DIR="$data" DATABASE_URL="$url" DATABASE_MAX_CONNECTIONS=20 \
    JWT_SECRET=$secret RATE_LIMIT_MESSAGES_PER_MINUTE=0 RATE_LIMIT_CONNECTIONS_PER_MINUTE=0 \
    RATE_LIMIT_POSTS_PER_MINUTE=0 RATE_LIMIT_SESSIONS_PER_MINUTE=0 RATE_LIMIT_JOINS_PER_MINUTE=0 \
    MAX_SOCKETS_PER_USER=0 DAILY_TOKEN_BUDGET=0 LOCAL_AI_PACING_MS=$pacing SUMMARY_EVERY=0 RUST_LOG=warn \
    "${POSTCHAT_BIN:-./target/release/postchat}" >> "$out/server.log" 2>&1 &
  server=$!
  servers+=("$server")
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$at/readyz" >/dev/null && return; sleep 0.2; done
  echo "the server did not start (see $out/server.log)" >&2
  exit 1
}
# Each scenario's database is dropped after it: left behind, the next scenarios would share the
# cores with autovacuum working through it.
stop_server() {
  for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
  servers=()
  if [ -n "$pg_db" ]; then
    psql "postgres://postgres@127.0.0.1:5432/postgres" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" || true
    pg_db=""
  fi
}
trap stop_server EXIT
lg() { ./target/release/loadgen --addr "127.0.0.1:$port" --jwt-secret $secret --server-pid "$server" "$@"; }

if [ "$mode" = cluster ]; then
  redis_port=3499
  redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$PWD/$out/redis.pid" --logfile "$PWD/$out/redis.log"
  trap 'stop_server; kill "$(cat "$out/redis.pid")" 2>/dev/null || true' EXIT
  redis_url="REDIS_URL=redis://127.0.0.1:$redis_port"
  tick=$(getconf CLK_TCK)
  # What the servers and Redis have used so far: "servers' CPU-seconds, Redis's, commands,
  # bytes" (Redis's counters only where it is used).
  usage() {
    local with_redis=$1 ticks=0 pid
    for pid in "${servers[@]}"; do ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    if [ "$with_redis" = yes ]; then
      redis-cli -p $redis_port info all | tr -d '\r' | awk -F: -v t="$ticks" -v hz="$tick" '
        /^used_cpu_(sys|user):/ { cpu += $2 } /^total_commands_processed:/ { c = $2 }
        /^total_net_(input|output)_bytes:/ { b += $2 }
        END { printf "%.3f %.3f %d %d\n", t / hz, cpu, c, b }'
    else
      awk -v t="$ticks" -v hz="$tick" 'BEGIN { printf "%.3f 0 0 0\n", t / hz }'
    fi
  }
  # measure NAME PROCESSES [loadgen chat arguments]: PROCESSES fresh servers (0: one without
  # Redis), the load, then per answer what they and Redis used (target/bench/NAME-cost.txt).
  measure() {
    local name=$1 processes=$2 with_redis=yes addrs="" before after answers i
    shift 2
    redis-cli -p $redis_port flushall >/dev/null
    redis-cli -p $redis_port config resetstat >/dev/null
    if [ "$processes" = 0 ]; then
      with_redis=no
      start_server
      addrs="127.0.0.1:$port"
    else
      for i in $(seq 0 $((processes - 1))); do
        start_server 0 $((port + i)) "$redis_url"
        addrs="$addrs${addrs:+,}127.0.0.1:$((port + i))"
      done
    fi
    before=$(usage $with_redis)
    ./target/release/loadgen --addr "$addrs" --jwt-secret $secret --json "$out/$name.json" chat "$@"
    after=$(usage $with_redis)
    # Which commands, counted since the scenario's start (CONFIG RESETSTAT).
    [ "$with_redis" = no ] || redis-cli -p $redis_port info commandstats | tr -d '\r' > "$out/$name-commands.txt"
    # The warm-up's answers used CPU too: "answers asked" counts them.
    answers=$(sed -n 's/.*"answers asked":\([0-9.]*\).*/\1/p' "$out/$name.json" | head -1)
    echo "$before $after" | awk -v a="${answers:-1}" -v n="$name" '{
      s = ($5 - $1) / a * 1e6; r = ($6 - $2) / a * 1e6
      printf "  %s: %d answers; per answer: %.1f µs of CPU (servers %.1f + Redis %.1f), %.1f Redis commands, %.0f bytes to and from Redis\n",
        n, a, s + r, s, r, ($7 - $3) / a, ($8 - $4) / a }' | tee "$out/$name-cost.txt"
    stop_server
  }
  rate=${RATE_CLUSTER:-300}
  for setup in "single 0" "one-with-redis 1" "three 3"; do
    read -r label processes <<< "$setup"
    measure "cluster-$label-rate-$rate" "$processes" --users 100 --seconds 15 --rate "$rate"
    for n in "$@"; do measure "cluster-$label-$n" "$processes" --users "$n" --seconds 15; done
  done
  measure "cluster-three-100-watched" 3 --users 100 --seconds 15 --watch-elsewhere
  measure "cluster-three-100-watched-think-${THINK_CLUSTER:-1000}" 3 --users 100 --seconds 15 \
    --watch-elsewhere --think-ms "${THINK_CLUSTER:-1000}"
  exit 0
fi
if [ "$mode" = node ]; then
  [ -d tools/node-reference/node_modules ] || (cd tools/node-reference && npm ci --no-audit --no-fund)
  node_port=3400
  start_node() {
    JWT_SECRET=$secret PORT=$node_port node tools/node-reference/server.mjs >> "$out/node.log" 2>&1 &
    server=$!
    servers+=("$server")
    for _ in $(seq 50); do curl -s "http://127.0.0.1:$node_port/" >/dev/null && return; sleep 0.2; done
    echo "the Node.js reference did not start (see $out/node.log)" >&2
    exit 1
  }
  node_lg() { ./target/release/loadgen --addr "127.0.0.1:$node_port" --jwt-secret $secret --server-pid "$server" "$@"; }
  figure() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" "$1" | head -1; }
  for run in $(seq "$runs"); do
    start_server
    lg --json "$out/node-rust-$run.json" chat --users 100 --seconds 15
    stop_server
    start_node
    node_lg --json "$out/node-node-$run.json" chat --users 100 --seconds 15
    stop_server
  done
  start_server
  lg --json "$out/node-rust-idle.json" idle --connections 8000 --hold 3
  stop_server
  start_node
  node_lg --json "$out/node-node-idle.json" idle --connections 8000 --hold 3
  stop_server
  echo "token events/s, 100 users (this server on SQLite / Node.js reference in memory):"
  for run in $(seq "$runs"); do
    rust=$(figure "$out/node-rust-$run.json" "token events\/s delivered")
    nodejs=$(figure "$out/node-node-$run.json" "token events\/s delivered")
    awk -v r="$rust" -v n="$nodejs" -v i="$run" 'BEGIN { printf "  run %d: %.0f / %.0f = %.2fx\n", i, r, n, r / n }'
  done
  rust=$(figure "$out/node-rust-idle.json" "server KiB per connection")
  nodejs=$(figure "$out/node-node-idle.json" "server KiB per connection")
  awk -v r="$rust" -v n="$nodejs" 'BEGIN { printf "idle at 8,000: %.1f / %.1f KiB per connection\n", r, n }'
  exit 0
fi
if [ "$mode" = soak ]; then
  minutes="${1:-30}"
  start_server 15
  lg --json "$out/soak-$db-$minutes.json" soak --users 200 --idle 2000 --think-ms 1000 --minutes "$minutes"
  stop_server
  exit 0
fi
if [ "$mode" = stored ]; then
  stored="$1"
  start_server
  lg --json "$out/chat-stored-0.json" chat --users 100 --seconds 20
  stop_server
  start_server
  # Sessions of 500 finished exchanges each, as many as make $stored messages, then the
  # statistics a running database would have (autovacuum may be off).
  psql "postgres://postgres@127.0.0.1:5432/$pg_db" -q -v n="$stored" -f tests/bench-stored-messages.sql
  lg --json "$out/chat-stored-$stored.json" chat --users 100 --seconds 20
  stop_server
  exit 0
fi

for n in "${users[@]}"; do
  start_server
  lg --json "$out/chat-$db-$n.json" chat --users "$n" --seconds 15
  curl -s "http://127.0.0.1:$port/metrics" > "$out/metrics-chat-$db-$n.txt"
  stop_server
done
for t in "${think[@]}"; do
  start_server
  lg --json "$out/chat-$db-500-think-$t.json" chat --users 500 --seconds 15 --think-ms "$t"
  stop_server
done
start_server
lg --json "$out/fanout-$db.json" fanout --sockets 100 --seconds 10
stop_server
for n in "${idle[@]}"; do
  if [ "$n" -gt "$max_idle" ]; then
    echo "idle: $n connections exceed the open-file limit ($(ulimit -n)): $max_idle instead" >&2
    n=$max_idle
  fi
  start_server
  lg --json "$out/idle-$db-$n.json" idle --connections "$n" --hold 3
  stop_server
done
start_server
lg --json "$out/idle-$db-8000-browser.json" idle --connections 8000 --hold 3 --browser-headers
stop_server
