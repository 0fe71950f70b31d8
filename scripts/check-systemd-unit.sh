#!/usr/bin/env bash
# Lints systemd/omnisync.service without a running systemd: `systemd-analyze verify` must be
# clean and the `systemd-analyze security` exposure must stay at or below 2.0 ("OK").
# The unit's /usr/bin/omnisync is pointed at the freshly built binary for the check.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd >/dev/null; }
cargo build -q --bin omnisync
bin="$(pwd)/target/debug/omnisync"
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
sed "s#/usr/bin/omnisync#$bin#g" systemd/omnisync.service > "$dir/omnisync.service"
out=$(systemd-analyze verify --man=no "$dir/omnisync.service" 2>&1 || true)
# Ignore lines about other units on this host (not ours).
ours=$(grep -F "omnisync.service" <<<"$out" || true)
if [ -n "$ours" ]; then echo "$ours"; echo "systemd-analyze verify reported problems"; exit 1; fi
score=$(systemd-analyze security --offline=true "$dir/omnisync.service" 2>/dev/null | awk '/Overall exposure level/ {print $(NF-2)}')
echo "systemd-analyze verify: clean; security exposure: ${score:-unknown}"
awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }' || { echo "exposure above 2.0"; exit 1; }
