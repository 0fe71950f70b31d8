#!/usr/bin/env bash
# The .deb under a real systemd: boots a Debian 12 (systemd 252) tree as a container with
# systemd as PID 1 (systemd-nspawn), installs the package in it with dpkg, starts the four
# API simulators there as a transient unit, and checks the unit and the daemon the way an
# operator meets them:
#   package        installs the unit (not enabled, not started), config, man pages, completions
#   exposure       `systemd-analyze security omnisync.service` inside the system <= 2.0
#   start          `systemctl start` blocks until READY=1 (the first healthcheck is slowed
#                  down: ActiveState is `activating` meanwhile)
#   credentials    every secret comes from LoadCredential= (/etc/credstore), the connectors
#                  authenticate with them, no secret value reaches the journal
#   status         StatusText: "4 connectors, 0 failing; run N (full) at …: consistency …"
#   journal        entries are journald-native, with structured fields (CONNECTOR=…)
#   reload         a good config: SubState reload -> running, same MainPID, the new value
#                  (a safety buffer) pushed; a broken one: `systemctl reload` fails at
#                  ExecReload=check-config, and a SIGHUP sent by hand is refused by the
#                  daemon, which keeps running on the old config and says so in StatusText;
#                  fixed again: reloads
#   watchdog       the test-only trigger (OMNISYNC_TEST_HOOKS=1 + SIGUSR1) stops the
#                  heartbeat: systemd kills it ('watchdog') and restarts it
#   stop           with corrections queued (a simulator answers 429 Retry-After: 600) and
#                  held: exits 0 (Result=success), and they are all still in the outbox
# Prints PASS/FAIL per check; exits 1 when any failed. Cleans up its processes, mounts and
# cgroups on exit, also on failure or Ctrl-C.
#
# Usage: sudo scripts/systemd-test.sh [--deb FILE] [--keep]
#   --deb FILE   the package (default: the newest target/debian/omnisync_*.deb; build it with
#                scripts/build-deb.sh)
#   --keep       keep the work directory (payload, nspawn log, journal copy)
# Needs root. Installs systemd-container and debootstrap with apt when missing. The root
# file system (debootstrap bookworm minbase, ~45 s once) is cached in
# $OMNISYNC_SYSTEMD_TEST_CACHE (default /var/cache/omnisync-systemd-test) and never
# modified: the container runs on a throwaway overlay (--volatile=overlay) and its own
# network namespace (--private-network: the simulators and the daemon use its loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

deb=""
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) deb=${2:?--deb needs a file}; shift 2 ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "systemd-test.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "== $*"; }
die() { echo "systemd-test.sh: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (systemd-nspawn, cgroups, namespaces)"
if [ -z "$deb" ]; then
    deb=$(find target/debian -maxdepth 1 -name 'omnisync_*.deb' -printf '%T@ %p\n' 2>/dev/null \
        | sort -rn | head -n 1 | cut -d' ' -f2- || true)
    [ -n "$deb" ] || die "no target/debian/omnisync_*.deb: run scripts/build-deb.sh first (or pass --deb FILE)"
fi
[ -f "$deb" ] || die "no such package: $deb"
deb=$(realpath "$deb")

# --- tools and the cached root file system -----------------------------------------------
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing systemd-container and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        systemd-container debootstrap >/dev/null
fi
# With recommends, libnss-mymachines comes along and edits /etc/nsswitch.conf: not wanted.
if dpkg-query -W -f='${Status}' libnss-mymachines 2>/dev/null | grep -q 'ok installed'; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq libnss-mymachines >/dev/null
fi

cache=${OMNISYNC_SYSTEMD_TEST_CACHE:-/var/cache/omnisync-systemd-test}
rootfs=$cache/rootfs
# procps: /bin/kill (ExecReload=); python3: scripts/systemd/helper.py; ca-certificates: the
# package depends on it. A cached tree made with another list is made again.
include=systemd,systemd-sysv,dbus,procps,python3,ca-certificates
mkdir -p "$cache"
(
    flock 9
    if [ "$(cat "$rootfs/.omnisync-complete" 2>/dev/null)" != "bookworm $include" ]; then
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        mirror=${mirror:-http://deb.debian.org/debian}
        say "debootstrap bookworm minbase into $rootfs (once; ~45 s)"
        rm -rf "$rootfs" "$rootfs.tmp"
        debootstrap --variant=minbase --include="$include" bookworm "$rootfs.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
        echo "bookworm $include" >"$rootfs.tmp/.omnisync-complete"
        mv "$rootfs.tmp" "$rootfs"
    fi
) 9>"$cache/lock" || die "debootstrap failed (log: $cache/debootstrap.log)"

# --- results ---------------------------------------------------------------------------
passed=0
failed=0
t0=$(date +%s.%N)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { # check "description" command... : PASS/FAIL on the command's status
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# --- the container ---------------------------------------------------------------------
name=omnisync-test-$$
work=$(mktemp -d "/tmp/$name.XXXXXX")
payload=$work/payload
mkdir -p "$payload"
cp "$deb" "$payload/omnisync.deb"
cp "$repo/scripts/systemd/helper.py" "$payload/helper.py"
nspawn_pid=""
leader=""

sampler=""
cleanup() {
    local rc=$?
    set +e
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" # nspawn asks the container's systemd to halt
        for _ in $(seq 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$nspawn_pid" 2>/dev/null && kill -KILL "$nspawn_pid"
    fi
    # Whatever is left in our cgroups (only after a KILL) goes too, then the cgroups.
    for h in systemd unified; do
        local cg=/sys/fs/cgroup/$h/$name
        [ -d "$cg" ] || continue
        for _ in 1 2 3; do
            local pids
            pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
            [ -z "$pids" ] && break
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null
            sleep 0.2
        done
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
        [ -d "$cg" ] && echo "systemd-test.sh: could not remove cgroup $cg" >&2
    done
    rmdir "/run/systemd/nspawn/propagate/$name" 2>/dev/null
    if [ "$keep" = 1 ]; then echo "kept: $work"; else rm -rf "$work"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "booting $(basename "$rootfs") (systemd as PID 1) as container $name"
# Our own cgroup subtree (nspawn --keep-unit puts the container's payload/ and supervisor/
# beneath the cgroup it is started in): nothing at the hierarchy roots, removed on exit.
for h in systemd unified; do mkdir -p "/sys/fs/cgroup/$h/$name"; done
(
    for h in systemd unified; do echo "$BASHPID" >"/sys/fs/cgroup/$h/$name/cgroup.procs"; done
    exec setsid systemd-nspawn --quiet -D "$rootfs" --machine="$name" --hostname=omnisync-test \
        --boot --register=no --keep-unit --volatile=overlay --private-network \
        --system-call-filter=bpf --console=read-only \
        --bind-ro="$payload:/mnt/payload" </dev/null >"$work/nspawn.log" 2>&1
) &
nspawn_pid=$!
for _ in $(seq 100); do
    leader=$(pgrep -P "$nspawn_pid" -x systemd || true)
    [ -n "$leader" ] && break
    sleep 0.1
done
[ -n "$leader" ] || { cat "$work/nspawn.log" >&2; die "the container's systemd did not start"; }
c() { nsenter -t "$leader" -a "$@"; }
state=""
for _ in $(seq 300); do
    state=$(c systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.1
done
case "$state" in running | degraded) ;; *) cat "$work/nspawn.log" >&2; die "boot did not finish (state '$state')" ;; esac
say "booted in $(since "$t0") s ($state; $(c systemctl --version | head -n 1))"

U=omnisync.service
prop() { c systemctl show -p "$1" --value "$U"; }
journal() { c journalctl -u "$U" -o cat --no-pager; }
jlines() { journal | wc -l; }
jfrom() { journal | tail -n +"$(($1 + 1))"; } # journal lines after a jlines mark
h() { c /usr/bin/python3 /mnt/payload/helper.py "$@"; }
wait_for() { # wait_for SECONDS command...: true once the command succeeds
    local end=$(($(date +%s) + $1))
    shift
    while :; do
        "$@" && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.2
    done
}
ERP=http://127.0.0.1:18080
EBAY=http://127.0.0.1:18082
META=http://127.0.0.1:18083
DB=/var/lib/private/omnisync/omnisync.db
CONF=/etc/omnisync/omnisync.toml

# --- 1. the package --------------------------------------------------------------------
say "dpkg -i $(basename "$deb")"
if c dpkg -i /mnt/payload/omnisync.deb >"$work/dpkg.log" 2>&1; then
    missing=""
    for f in /usr/bin/omnisync /usr/lib/systemd/system/omnisync.service $CONF \
        /usr/share/man/man1/omnisync.1.gz /usr/share/man/man1/omnisync-run.1.gz \
        /usr/share/bash-completion/completions/omnisync /usr/share/zsh/vendor-completions/_omnisync \
        /usr/share/fish/vendor_completions.d/omnisync.fish /usr/share/doc/omnisync/README.md; do
        c test -e "$f" || missing="$missing $f"
    done
    enabled=$(c systemctl is-enabled "$U" 2>/dev/null || true)
    active=$(c systemctl is-active "$U" 2>/dev/null || true)
    # shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
    conffile=$(c dpkg-query -W -f='${Conffiles}' omnisync | awk '{print $1}' | tr '\n' ' ')
    version=$(c omnisync --version | head -n 1)
    if [ -z "$missing" ] && [ "$enabled" = disabled ] && [ "$active" = inactive ] \
        && [[ "$conffile" == *"$CONF"* ]] && [[ "$version" =~ \([0-9a-f]{12} ]]; then
        pass "package: dpkg -i installs binary, unit, conffile $CONF, man pages, bash/zsh/fish completions; unit $enabled and $active; '$version'"
    else
        fail "package: missing [$missing] enabled=$enabled active=$active conffiles=[$conffile] version='$version'"
    fi
else
    cat "$work/dpkg.log"
    fail "package: dpkg -i failed"
fi
verify=$(c systemd-analyze verify "$U" 2>&1 | grep -F "$U" || true)
check "systemd-analyze verify $U: clean${verify:+ ($verify)}" test -z "$verify"

# --- 2. exposure inside the real system ------------------------------------------------
score=$(c systemd-analyze security "$U" --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    pass "exposure: systemd-analyze security $U = $score (<= 2.0)"
else
    fail "exposure: systemd-analyze security $U = '${score:-none}' (want <= 2.0)"
fi

# --- the simulators and the config -----------------------------------------------------
say "simulators (transient unit omnisync-sim) on the container's loopback"
c systemd-run --quiet --unit=omnisync-sim -p RuntimeDirectory=omnisync-sim --setenv=RUST_LOG=warn \
    /usr/bin/omnisync sim --port-base 18080 --skus 200 \
    --write-config /run/omnisync-sim/sim.toml --database sqlite://$DB
sims_up() { c journalctl -u omnisync-sim -o cat --no-pager | grep -q 'config for these simulators'; }
wait_for 30 sims_up || { c journalctl -u omnisync-sim --no-pager | tail -n 20; die "the simulators did not start"; }

# Every literal secret of the simulator config becomes a file in /etc/credstore (what the
# unit's LoadCredential=NAME reads) and credential:NAME in the config.
mkconfig() { h mkconfig /run/omnisync-sim/sim.toml "$CONF" /etc/credstore "$@"; }
creds=$(mkconfig)
c mkdir -p /etc/systemd/system/$U.d
c tee /etc/systemd/system/$U.d/test.conf >/dev/null <<'EOF'
# scripts/systemd-test.sh: the test-only trigger, a short watchdog, a quick restart.
[Service]
Environment=OMNISYNC_TEST_HOOKS=1
WatchdogSec=3s
RestartSec=1s
LimitCORE=0
EOF
c systemctl daemon-reload

# --- 3. start blocks until READY=1 -----------------------------------------------------
say "systemctl start $U (the ERP answers the first healthcheck after 2 s)"
h http POST $ERP/__sim/faults '{"kind": "delay", "ms": 2000, "times": 1}' >/dev/null
mark=$(jlines)
(sleep 1; prop ActiveState >"$work/mid-start") &
sampler=$!
ts=$(now)
if c systemctl start "$U"; then rc=0; else rc=$?; fi
took=$(since "$ts")
wait "$sampler" || true
mid=$(cat "$work/mid-start" 2>/dev/null || true)
after=$(prop ActiveState)
if [ "$rc" = 0 ] && [ "$mid" = activating ] && [ "$after" = active ] \
    && awk -v t="$took" 'BEGIN { exit !(t >= 1.9) }'; then
    pass "start: systemctl start returned after ${took} s, once READY=1 (ActiveState at +1 s: $mid; then $after)"
else
    fail "start: rc=$rc took=${took}s ActiveState at +1 s='$mid' after='$after'"
    journal | tail -n 30
fi
pid1=$(prop MainPID)
if [ "$(prop ActiveState)" != active ]; then
    fail "the unit is not running: the remaining checks cannot run"
    journal | tail -n 30
    echo "$passed passed, $failed failed"
    exit 1
fi

# --- 4. credentials --------------------------------------------------------------------
healthy=$(jfrom "$mark" | grep -c 'healthcheck ok' || true)
in_dir=$(c ls "/run/credentials/$U" 2>/dev/null | tr '\n' ' ')
leaked=""
looked=0
for f in $creds; do
    secret=$(c cat "/etc/credstore/$f")
    [ "${#secret}" -ge 8 ] || continue # "admin" (the ERP's) also names the login: not telling
    looked=$((looked + 1))
    if c journalctl --no-pager -o verbose | grep -qF -- "$secret"; then leaked="$leaked $f"; fi
done
n_creds=$(wc -w <<<"$creds")
if [ "$n_creds" -ge 7 ] && [ "$healthy" -ge 4 ] && [ -z "$leaked" ] \
    && [ "$(wc -w <<<"$in_dir")" = "$n_creds" ]; then
    pass "credentials: $n_creds secrets only as LoadCredential= files (/run/credentials/$U: $in_dir); the 4 connectors authenticated with them (healthcheck ok x$healthy); none of the $looked of 8+ characters anywhere in the journal"
else
    fail "credentials: config names [$creds], /run/credentials/$U has [$in_dir], healthcheck ok x$healthy, leaked in journal: [$leaked]"
fi

# --- 5. status text --------------------------------------------------------------------
status_re='^4 connectors, 0 failing; run [0-9]+ \(full\) at [0-9]{2}:[0-9]{2}:[0-9]{2}Z: consistency .*webshop [01]\.[0-9]{4}.*; [0-9]+ queued$'
status_ok() { [[ "$(prop StatusText)" =~ $status_re ]]; }
passes() { jfrom "$1" | grep -c '^pass finished' || true; } # passes finished since a mark
passed_since() { [ "$(passes "$1")" -ge "${2:-1}" ]; }
wait_for 30 passed_since "$mark" || true
if wait_for 5 status_ok; then
    pass "status: StatusText='$(prop StatusText)'"
else
    fail "status: StatusText='$(prop StatusText)' after the first pass (want '4 connectors, 0 failing; run N (full) at HH:MM:SSZ: consistency …; N queued')"
fi

# Logs go to journald natively (JOURNAL_STREAM): fields, not text to be parsed.
fields=$(c journalctl -u "$U" -o export --no-pager | grep -E '^(CONNECTOR|SYSLOG_IDENTIFIER)=' | sort -u | tr '\n' ' ')
if [[ "$fields" == *"CONNECTOR=erp"* ]] && [[ "$fields" == *"SYSLOG_IDENTIFIER=omnisync"* ]]; then
    pass "journal: native entries with structured fields (${fields:0:120}…)"
else
    fail "journal: no structured CONNECTOR= / SYSLOG_IDENTIFIER=omnisync fields (got: ${fields:0:200})"
fi

# --- 6. reload with a good config ------------------------------------------------------
# marketplace safety_buffer 2 -> 5: the first pass on the new config takes 3 more units
# off every marketplace listing. The ERP answers the reload's healthcheck after 1.5 s, so
# the reload state lasts long enough to be seen.
say "reload with a good config (marketplace safety_buffer 2 -> 5)"
units_before=$(h stock-sum $EBAY)
meta_requests() { h http GET $META/__sim/stats | python3 -c 'import json, sys; print(json.load(sys.stdin)["requests"])'; }
meta_before=$(meta_requests)
mkconfig connectors.marketplace/safety_buffer=5 >/dev/null
h http POST $ERP/__sim/faults '{"kind": "delay", "ms": 1500, "times": 1}' >/dev/null
mark=$(jlines)
(for _ in $(seq 100); do prop SubState; sleep 0.05; done >"$work/reload-states") &
sampler=$!
if c systemctl reload "$U"; then rc=0; else rc=$?; fi
wait "$sampler" || true
states=$(uniq "$work/reload-states" | tr '\n' ' ')
applied() { passed_since "$mark" && [ "$(h stock-sum $EBAY)" -lt "$units_before" ]; }
wait_for 30 applied || true
units_after=$(h stock-sum $EBAY)
if [ "$rc" = 0 ] && [[ "$states" == *reload*running* ]] && [ "$(prop MainPID)" = "$pid1" ] \
    && [ "$(prop ActiveState)" = active ] && jfrom "$mark" | grep -q '^reloaded' \
    && [ "$units_after" -lt "$units_before" ]; then
    pass "reload (good config): systemctl reload ok; SubState $states; same MainPID $pid1; the new safety buffer applied: marketplace units $units_before -> $units_after"
else
    fail "reload (good config): rc=$rc SubState [$states] MainPID $(prop MainPID) (was $pid1) units $units_before -> $units_after"
    jfrom "$mark" | tail -n 20
fi
meta_reads=$(($(meta_requests) - meta_before)) # healthcheck + the pass's reads (no social writes)

# --- 7. reload with a broken config ----------------------------------------------------
say "reload with a broken config (marketplace rounding \"x.95\")"
mkconfig 'connectors.marketplace/rounding="x.95"' >/dev/null
mark=$(jlines)
if c systemctl reload "$U"; then rc=0; else rc=$?; fi
# ExecReload= runs `check-config --no-secrets` first: the reload job fails, the daemon never
# hears of the broken file.
if [ "$rc" != 0 ] && [ "$(prop MainPID)" = "$pid1" ] && [ "$(prop ActiveState)/$(prop SubState)" = active/running ] \
    && jfrom "$mark" | grep -q 'connectors.marketplace.rounding'; then
    pass "reload (broken config): systemctl reload failed (rc=$rc) at ExecReload=check-config, naming connectors.marketplace.rounding; still active/running, same MainPID"
else
    fail "reload (broken config): rc=$rc MainPID $(prop MainPID) (was $pid1) state $(prop ActiveState)/$(prop SubState)"
    jfrom "$mark" | tail -n 20
fi
# A SIGHUP that bypasses ExecReload= (kill -HUP by hand): the daemon checks again itself.
mark=$(jlines)
c systemctl kill -s SIGHUP --kill-who=main "$U"
refused() { [[ "$(prop StatusText)" == "reload refused, running on the previous config"* ]]; }
if wait_for 15 refused && [ "$(prop MainPID)" = "$pid1" ] && [ "$(prop ActiveState)/$(prop SubState)" = active/running ] \
    && [[ "$(prop StatusText)" == *connectors.marketplace.rounding* ]]; then
    pass "reload (broken config, SIGHUP by hand): refused by the daemon, still active/running on the previous config, same MainPID; StatusText='$(prop StatusText | cut -c1-150)…'"
else
    fail "reload (broken config, SIGHUP by hand): StatusText='$(prop StatusText)' MainPID $(prop MainPID) (was $pid1) state $(prop ActiveState)/$(prop SubState)"
    jfrom "$mark" | tail -n 20
fi
mkconfig connectors.marketplace/safety_buffer=5 >/dev/null
mark=$(jlines)
if c systemctl reload "$U"; then rc=0; else rc=$?; fi
wait_for 30 passed_since "$mark" || true
if [ "$rc" = 0 ] && jfrom "$mark" | grep -q '^reloaded' && passed_since "$mark" && ! refused; then
    pass "reload (config fixed again): reloaded, a pass ran; StatusText='$(prop StatusText)'"
else
    fail "reload (config fixed again): rc=$rc StatusText='$(prop StatusText)'"
fi

# --- 8. watchdog -----------------------------------------------------------------------
say "watchdog: SIGUSR1 (OMNISYNC_TEST_HOOKS=1) stops the scheduler heartbeat"
restarts=$(prop NRestarts)
mark=$(jlines)
ts=$(now)
c systemctl kill -s SIGUSR1 --kill-who=main "$U"
restarted() {
    local p
    p=$(prop MainPID)
    [ "$p" != 0 ] && [ "$p" != "$pid1" ] && [ "$(prop ActiveState)" = active ] && [ "$(prop NRestarts)" -gt "$restarts" ]
}
if wait_for 90 restarted && jfrom "$mark" | grep -q "Failed with result 'watchdog'"; then
    pass "watchdog: $(jfrom "$mark" | grep -m1 -o 'Watchdog timeout[^!]*') -> Failed with result 'watchdog' -> restarted after $(since "$ts") s (NRestarts=$(prop NRestarts), MainPID $pid1 -> $(prop MainPID))"
else
    fail "watchdog: MainPID $(prop MainPID) (was $pid1) NRestarts $(prop NRestarts) (was $restarts) ActiveState $(prop ActiveState)"
    jfrom "$mark" | tail -n 25
fi
pid2=$(prop MainPID)
first_pass_done() { c journalctl _PID="$pid2" -o cat --no-pager | grep -q '^pass finished'; }
wait_for 30 first_pass_done || true

# --- 9. stop drains, queued corrections stay -------------------------------------------
# ERP changes make corrections for every target: 10 SKUs get more stock at central-wh and
# 3 SKUs triple their price (the webshop holds those for approval: max_price_change_percent).
# The social simulator answers the healthcheck and the reads of the pass, then 429
# Retry-After: 600 to the pushes: those corrections are rescheduled 10 minutes out, queued
# in the outbox when the stop comes.
say "stop with corrections queued"
mapfile -t skus < <(h skus $ERP 13)
h bump-stock $ERP 11 7 "${skus[@]:0:10}"
h scale-price $ERP 3 "${skus[@]:10:3}"
h http DELETE $META/__sim/faults >/dev/null
h http POST $META/__sim/faults "{\"kind\": \"delay\", \"ms\": 0, \"times\": $meta_reads}" >/dev/null
h http POST $META/__sim/faults '{"kind": "status", "status": 429, "retry_after": 600, "times": 5}' >/dev/null
mark=$(jlines)
c systemctl reload "$U" || true # a healthcheck and a full pass on the (same) config
queued() { python3 -c 'import json, sys; print(sum(n for k, n in json.loads(sys.argv[1]).items() if k.startswith("queued/")))' "$(h outbox $DB)"; }
has_queued() { passed_since "$mark" && [ "$(queued)" -gt 0 ]; }
wait_for 60 has_queued || true
h http DELETE $META/__sim/faults >/dev/null
outbox_before=$(h outbox $DB)
queued_before=$(queued)
mark=$(jlines)
ts=$(now)
if c systemctl stop "$U"; then rc=0; else rc=$?; fi
took=$(since "$ts")
outbox_after=$(h outbox $DB)
result=$(prop Result)
code=$(prop ExecMainStatus)
# The daemon's own lines (not systemd's "Stopping omnisync…"/"Stopped omnisync…").
stop_log=$(c journalctl _PID="$pid2" -o cat --no-pager | grep -iE 'stop|drain' | head -n 3 | tr '\n' '|')
if [ "$rc" = 0 ] && [ "$result" = success ] && [ "$code" = 0 ] && [ "$queued_before" -gt 0 ] \
    && [ "$outbox_after" = "$outbox_before" ] && [ -n "$stop_log" ]; then
    pass "stop: exit 0 after ${took} s (Result=$result), daemon: '${stop_log%|}'; outbox kept: $outbox_after"
else
    fail "stop: rc=$rc Result=$result ExecMainStatus=$code took=${took}s; outbox before $outbox_before after $outbox_after; daemon lines: '$stop_log'"
    jfrom "$mark" | tail -n 20
fi

# --- summary ---------------------------------------------------------------------------
c journalctl --no-pager -o short-iso >"$work/journal.txt" 2>&1 || true
c journalctl --no-pager -o verbose -u "$U" >"$work/journal-omnisync-verbose.txt" 2>&1 || true
echo "== $(since "$t0") s; the container's journal: $([ "$keep" = 1 ] && echo "$work/journal.txt" || echo 'keep it with --keep')"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
