#!/usr/bin/env bash
TRYTON_HOME="${TRYTON_HOME:-${TMPDIR:-/tmp}/omnisync-real/tryton}"; PIDF="$TRYTON_HOME/server.pid"
[ -f "$PIDF" ] || { echo "no pid file"; exit 0; }
PID=$(cat "$PIDF")
if kill -0 "$PID" 2>/dev/null; then
  kill "$PID"; for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$PID" 2>/dev/null && kill -9 "$PID"
fi
rm -f "$PIDF"; echo "trytond stopped ($PID)"
