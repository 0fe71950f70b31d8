#!/usr/bin/env bash
# Builds the Debian package: target/debian/omnisync_<version>-1_<arch>.deb, and its debug
# symbols (the release profile keeps line tables) as omnisync-dbgsym_<version>-1_<arch>.ddeb.
#
# The release binary, the man pages and shell completions it generates from its own CLI
# definition (`omnisync generate man|completions`, into target/generated/), then `cargo deb`
# with [package.metadata.deb] from Cargo.toml: /usr/bin/omnisync, the systemd unit,
# /etc/omnisync/omnisync.toml (a conffile, from config/example.toml), man pages, bash/zsh/fish
# completions, README and ARCHITECTURE. Installs cargo-deb (crates.io) when missing.
#
# Usage: scripts/build-deb.sh [--lint] [--dev]
#   --lint  also runs lintian, if installed
#   --dev   packages the debug build (the one `cargo test` made) instead of a release
#           build: what CI does, to test the package without a second full build
# Prints the path of the .deb on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

lint=0
profile=release
for arg in "$@"; do
    case "$arg" in
        --lint) lint=1 ;;
        --dev) profile=dev ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked
fi

echo "== cargo build --profile $profile --bin omnisync"
cargo build --profile "$profile" --locked --bin omnisync
if [ "$profile" = dev ]; then dir=debug; else dir=release; fi
bin="${CARGO_TARGET_DIR:-target}/$dir/omnisync"
"$bin" --version | sed 's/^/   /'

# Generated from the CLI definition of the binary being packaged.
gen=target/generated
rm -rf "$gen"
"$bin" generate man "$gen/man" >/dev/null
"$bin" generate completions "$gen/completions" >/dev/null
echo "== generated $(find "$gen/man" -name '*.1' | wc -l) man pages and 3 completions in $gen"

echo "== cargo deb --profile $profile"
if [ "$profile" = release ]; then dbgsym=--dbgsym; else dbgsym=; fi
built=$(cargo deb --no-build --locked --profile "$profile" $dbgsym)
deb=$(grep -E '\.deb$' <<<"$built" | tail -n 1)
grep -E '\.ddeb$' <<<"$built" | sed 's/^/   debug symbols: /' || true
[ -f "$deb" ] || { echo "build-deb.sh: cargo deb did not report a .deb (got: $deb)" >&2; exit 1; }

echo "== contents"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\|Installed-Size\):/   \1:/p'
dpkg-deb --contents "$deb" | awk '{print "   " $1, $6}' | grep -v '/$'

if [ "$lint" = 1 ]; then
    if command -v lintian >/dev/null; then
        echo "== lintian"
        lintian --tag-display-limit 0 "$deb" || true
    else
        echo "== lintian not installed (apt-get install lintian); skipped"
    fi
fi
echo "$deb"
