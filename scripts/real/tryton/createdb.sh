#!/usr/bin/env bash
# (Re)creates SQLite database $TRYTON_DB (default shop): activates product+stock, admin/admin,
# then seeds via seed.py. Saves a pristine copy db/$TRYTON_DB.template.sqlite: later tests can
# reset state in milliseconds with  cp db/shop.template.sqlite db/shop.sqlite  (server stopped).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
TRYTON_HOME="${TRYTON_HOME:-${TMPDIR:-/tmp}/omnisync-real/tryton}"; DB="${TRYTON_DB:-shop}"
cd "$TRYTON_HOME"
rm -f "db/$DB.sqlite" "db/$DB.sqlite-wal" "db/$DB.sqlite-shm"; touch "db/$DB.sqlite"
PASSF=$(mktemp); echo admin > "$PASSF"
t0=$(date +%s.%N)
TRYTONPASSFILE="$PASSF" venv/bin/trytond-admin -c trytond.conf -d "$DB" -u product stock \
  --activate-dependencies --email admin@example.com > admin.log 2>&1
rm -f "$PASSF"
echo "db+modules ready" >&2
venv/bin/python "$HERE/seed.py" trytond.conf "$DB" | tee seed.json
cp "db/$DB.sqlite" "db/$DB.template.sqlite"
