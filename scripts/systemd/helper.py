#!/usr/bin/python3
"""Runs inside the test container for scripts/systemd-test.sh (python3 is all the minbase
tree has): talks to the simulators' /__sim admin API, writes the daemon config with its
secrets as systemd credentials, and reads the daemon's SQLite outbox.

  helper.py http METHOD URL [JSON]          print the response body
  helper.py stock-sum URL                   total units over every listing of a simulator
  helper.py skus URL N                      the first N SKUs of a simulator, one per line
  helper.py bump-stock URL LOCATION DELTA SKU...   add DELTA units at LOCATION for each SKU
  helper.py scale-price URL FACTOR SKU...   multiply each SKU's regular price
  helper.py mkconfig SIM_TOML OUT CREDSTORE [KEY=VALUE ...]
        the simulator config with every literal secret moved to CREDSTORE/NAME and named
        credential:NAME; KEY=VALUE replaces a `KEY = …` line (first match after the
        section header in KEY, e.g. connectors.marketplace/safety_buffer=5)
  helper.py outbox DB                       outbox rows by status and channel, as JSON
"""
import json
import os
import re
import sqlite3
import sys
import urllib.request

# (section, key) in the simulator config -> credential name (the unit's LoadCredential=).
SECRETS = {
    ("connectors.erp.settings", "password"): "tryton-password",
    ("connectors.webshop.settings", "access_token"): "shopify-token",
    ("connectors.webshop.settings", "webhook_secret"): "shopify-webhook-secret",
    ("connectors.marketplace.settings", "access_token"): "ebay-token",
    ("connectors.social.settings", "access_token"): "meta-token",
    ("connectors.social.settings", "app_secret"): "meta-app-secret",
    ("connectors.social.settings", "webhook_verify_token"): "meta-verify-token",
}


def http(method, url, body=None):
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as r:
        return r.read().decode()


def records(url):
    return json.loads(http("GET", url.rstrip("/") + "/__sim/records"))


def mkconfig(src, out, credstore, overrides):
    os.makedirs(credstore, mode=0o700, exist_ok=True)
    wanted = {}
    for o in overrides:
        where, value = o.split("=", 1)
        section, key = where.rsplit("/", 1)
        wanted[(section, key)] = value
    section, lines, moved = "", [], []
    for line in open(src, encoding="utf-8").read().splitlines():
        m = re.match(r"^\[([^\]]+)\]\s*$", line)
        if m:
            section = m.group(1)
        m = re.match(r'^(\w+) = (.*)$', line)
        if m:
            key, value = m.group(1), m.group(2)
            if (section, key) in wanted:
                line = f"{key} = {wanted.pop((section, key))}"
            lit = re.match(r'^"literal:(.*)"$', value)
            if lit and (section, key) in SECRETS:
                name = SECRETS[(section, key)]
                path = os.path.join(credstore, name)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(lit.group(1))
                line = f'{key} = "credential:{name}"'
                moved.append(name)
        lines.append(line)
    if wanted:
        sys.exit(f"mkconfig: not found in {src}: {sorted(wanted)}")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(out, 0o644)
    print(" ".join(sorted(moved)))


def main(argv):
    cmd = argv[1]
    if cmd == "http":
        print(http(argv[2], argv[3], argv[4] if len(argv) > 4 else None))
    elif cmd == "stock-sum":
        print(sum(q for r in records(argv[2]) for q in r.get("stock", {}).values()))
    elif cmd == "skus":
        for r in records(argv[2])[: int(argv[3])]:
            print(r["sku"])
    elif cmd == "bump-stock":
        url, location, delta = argv[2].rstrip("/"), argv[3], int(argv[4])
        by_sku = {r["sku"]: r for r in records(url)}
        for sku in argv[5:]:
            q = by_sku[sku]["stock"].get(location, 0) + delta
            http("PUT", f"{url}/__sim/records/{sku}/stock?location={location}",
                 json.dumps({"quantity": q}))
    elif cmd == "scale-price":
        url, factor = argv[2].rstrip("/"), int(argv[3])
        by_sku = {r["sku"]: r for r in records(url)}
        for sku in argv[4:]:
            offer = by_sku[sku]["offer"]
            offer["price"]["minor"] *= factor
            offer.pop("sale", None)
            http("PUT", f"{url}/__sim/records/{sku}/offer", json.dumps(offer))
    elif cmd == "mkconfig":
        mkconfig(argv[2], argv[3], argv[4], argv[5:])
    elif cmd == "outbox":
        query = "SELECT status, channel, COUNT(*) FROM outbox GROUP BY 1, 2"
        try:
            # Read-only, so root leaves no files of its own in the daemon's state directory.
            db = sqlite3.connect(f"file:{argv[2]}?mode=ro", uri=True, timeout=10)
            rows = db.execute(query).fetchall()
        except sqlite3.OperationalError:
            # A WAL database without its -shm file (the daemon stopped) needs a writer.
            db = sqlite3.connect(argv[2], timeout=10)
            rows = db.execute(query).fetchall()
        print(json.dumps({f"{s}/{c}": n for s, c, n in rows}, sort_keys=True))
    else:
        sys.exit(f"helper.py: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
