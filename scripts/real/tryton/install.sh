#!/usr/bin/env bash
# Installs Tryton 8.0 LTS (trytond + product + stock + proteus) into a venv in $TRYTON_HOME.
set -euo pipefail
TRYTON_HOME="${TRYTON_HOME:-${TMPDIR:-/tmp}/omnisync-real/tryton}"
mkdir -p "$TRYTON_HOME/db"
cd "$TRYTON_HOME"
[ -x venv/bin/trytond ] || {
  python3 -m venv venv
  time venv/bin/pip install -q 'trytond>=8.0,<8.1' 'trytond-product>=8.0,<8.1' 'trytond-stock>=8.0,<8.1' 'proteus>=8.0,<8.1'
}
cat > trytond.conf <<CONF
[database]
uri = sqlite://
path = $TRYTON_HOME/db
[web]
listen = 127.0.0.1:${TRYTON_PORT:-8000}
CONF
venv/bin/trytond --version
