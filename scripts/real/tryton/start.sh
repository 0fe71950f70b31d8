#!/usr/bin/env bash
# Starts trytond on 127.0.0.1:$TRYTON_PORT (default 8000) for database $TRYTON_DB; pid in server.pid.
# RESET=1 copies the pristine template DB over the live one first.
set -euo pipefail
TRYTON_HOME="${TRYTON_HOME:-${TMPDIR:-/tmp}/omnisync-real/tryton}"; DB="${TRYTON_DB:-shop}"; PORT="${TRYTON_PORT:-8000}"
cd "$TRYTON_HOME"
if [ -f server.pid ] && kill -0 "$(cat server.pid)" 2>/dev/null; then echo "already running pid $(cat server.pid)"; exit 0; fi
# drop WAL/SHM side files too, or SQLite would replay stale pages onto the restored copy
[ "${RESET:-0}" = 1 ] && rm -f "db/$DB.sqlite-wal" "db/$DB.sqlite-shm" && cp "db/$DB.template.sqlite" "db/$DB.sqlite"
t0=$(date +%s.%N)
# -d preloads the module pool; without it the first login can fail with {"error":["'res.user'",""]}
nohup venv/bin/trytond -c trytond.conf -d "$DB" > server.log 2>&1 &
echo $! > server.pid
for _ in $(seq 1 150); do
  if curl -s -m 2 -H 'content-type: application/json' \
      -d '{"id":0,"method":"common.db.login","params":["admin",{"password":"admin"},"en"]}' \
      "http://127.0.0.1:$PORT/$DB/rpc/" | grep -q '"result"'; then
    echo "trytond up pid $(cat server.pid) on http://127.0.0.1:$PORT/$DB/rpc/"; exit 0
  fi
  kill -0 "$(cat server.pid)" 2>/dev/null || { echo "trytond died"; tail -30 server.log; exit 1; }
  sleep 0.2
done
echo timeout; kill "$(cat server.pid)"; exit 1
