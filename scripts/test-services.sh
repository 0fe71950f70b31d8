#!/usr/bin/env bash
# Suites that need a real service or a real third-party server.
#
#   scripts/test-services.sh            # everything below
#   scripts/test-services.sh postgres   # only the PostgreSQL store conformance suite
#   scripts/test-services.sh tryton     # only the adapter against a real trytond 8.0
#   scripts/test-services.sh alerts     # only alert e-mail to a real SMTP server (aiosmtpd)
#   scripts/test-services.sh browser    # only the web page in a real headless Chromium
#
# Installs what is missing (Debian packages, PyPI), starts what is not running, and stops
# only what it started. Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
want="${*:-postgres tryton alerts browser}"
started=()
cleanup() {
  for s in "${started[@]}"; do
    case "$s" in
      postgres) pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main stop || true ;;
      tryton) scripts/real/tryton/stop.sh || true ;;
    esac
  done
}
trap cleanup EXIT

run_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "== installing PostgreSQL (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "== starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    started+=(postgres)
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
  fi
  local db=omnisync_test
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  echo "== store and inbox conformance on PostgreSQL"
  TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/$db" \
    cargo test --test store --test webhooks --test views -- --nocapture postgres_
  echo "== alerts (incidents, notices) on PostgreSQL: one database per test, omnisync_alerts_*"
  OMNISYNC_TEST_ALERTS_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/postgres" \
    cargo test -p omnisync --test alerts
}

run_tryton() {
  local port="${TRYTON_PORT:-18000}"
  echo "== real trytond 8.0 (PyPI) on 127.0.0.1:$port"
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
  export TRYTON_PORT="$port"
  scripts/real/tryton/install.sh
  scripts/real/tryton/createdb.sh
  RESET=1 scripts/real/tryton/start.sh
  started+=(tryton)
  OMNISYNC_TRYTON_URL="http://127.0.0.1:$port" OMNISYNC_TRYTON_PRISTINE=1 \
    cargo test -p omnisync-tryton --test real_trytond -- --nocapture
}

run_alerts() {
  # aiosmtpd from PyPI into a venv under target/; the test starts and stops the server.
  local venv=target/alerts-venv
  if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    echo "== installing aiosmtpd (PyPI) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q aiosmtpd
  fi
  echo "== alert e-mail over SMTP to a real aiosmtpd"
  OMNISYNC_TEST_AIOSMTPD_PYTHON="$PWD/$venv/bin/python" \
    cargo test -p omnisync --test alerts -- --nocapture smtp_
}

run_browser() {
  if ! command -v chromium >/dev/null; then
    echo "== installing Chromium (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  echo "== the web page in headless Chromium (screenshot: target/test-output/dashboard.png)"
  OMNISYNC_CHROMIUM="$(command -v chromium)" \
    cargo test -p omnisync --test browser -- --nocapture
}

for w in $want; do
  case "$w" in
    postgres) run_postgres ;;
    tryton) run_tryton ;;
    alerts) run_alerts ;;
    browser) run_browser ;;
    *) echo "unknown suite $w (postgres, tryton, alerts, browser)"; exit 2 ;;
  esac
done
echo "services suites passed: $want"
