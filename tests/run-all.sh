#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first:
#   format and lint checks, Rust unit and integration tests (the store suite on SQLite and on
#   PostgreSQL), and the Node end-to-end tests against the real server binary (with the Node,
#   Python and browser clients: npm packages, a Python virtualenv and Chromium are installed;
#   and with a real model: llama-cpp-python's server, built once per machine into
#   ~/.cache/postchat, about 10 minutes the first time).
# PostgreSQL is expected on 127.0.0.1:5432 (TEST_POSTGRES_URL to change it); each test makes
# its own database. With CI=true an unreachable PostgreSQL fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "PostgreSQL at $TEST_POSTGRES_URL"
if ! psql "$TEST_POSTGRES_URL/postgres" -qtAc 'select 1' >/dev/null 2>&1; then
  # The machine's own cluster may just be stopped: start it when we can.
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
    sleep 2
  fi
fi
if psql "$TEST_POSTGRES_URL/postgres" -qtAc 'select 1' >/dev/null 2>&1; then
  echo "reachable"
elif [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL is unreachable and CI=true: failing" >&2
  exit 1
else
  echo "unreachable: PostgreSQL tests will be skipped (they fail under CI=true)"
fi

step "Node packages (client-demo)"
if [ ! -d client-demo/node_modules ] || [ client-demo/package-lock.json -nt client-demo/node_modules/.package-lock.json ]; then
  (cd client-demo && npm ci --no-audit --no-fund)
else
  echo "up to date"
fi

step "Python clients (target/pyenv: python-socketio)"
if [ ! -x target/pyenv/bin/python ] || [ client-demo/test/python/requirements.txt -nt target/pyenv/bin/python ]; then
  mkdir -p target
  if ! python3 -m venv target/pyenv && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Debian's python3 keeps venv in a package of its own.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv target/pyenv
  fi
  target/pyenv/bin/python -m pip install -q -r client-demo/test/python/requirements.txt
  touch target/pyenv/bin/python
else
  echo "up to date"
fi

step "Real model (tests/real-model: llama.cpp's server and SmolLM2, built once per machine)"
bash tests/real-model/setup.sh

# debian_package BINARY PACKAGE TEST: installs Debian's PACKAGE unless BINARY is there (as root).
debian_package() {
  if [ -x "$1" ]; then
    echo "present"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    echo "installed Debian's $2"
  else
    echo "missing and cannot be installed here: $3 will skip (it fails under CI=true)"
  fi
}

step "Chromium (browser test)"
debian_package /usr/bin/chromium chromium "the browser test"

step "HAProxy (the cluster test through a real balancer)"
debian_package /usr/sbin/haproxy haproxy "the balancer test"

step "faketime (the cluster test of processes whose clocks differ)"
debian_package /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 faketime "the clock-skew cluster test"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo build (the binaries the Node tests start)"
cargo build --locked --workspace --bins

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi

step "Node end-to-end tests"
set +e
(cd client-demo && npm test)
status=$?
set -e

# Drop the databases the tests made (best effort).
psql "$TEST_POSTGRES_URL/postgres" -qtAc \
  "select datname from pg_database where datname like 'postchat\_test\_%' or datname like 'postchat\_js\_%'" 2>/dev/null |
  while read -r db; do psql "$TEST_POSTGRES_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done

exit $status
