#!/usr/bin/env bash
# Builds corral's control UI (ui/) from the npm registry's packages, pinned
# in ui/package-lock.json.
#   scripts/ui.sh build OUTDIR   type-check and bundle into OUTDIR
#                                (index.html, app.js, app.css)
# Needs node >= 18 and npm (Debian 12: apt-get install nodejs npm).
# No source map (esbuild writes none unless asked).
# crates/corral-server/build.rs runs this and embeds OUTDIR's files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ui="$here/ui"

die() {
    echo "corral ui: $*" >&2
    exit 3
}

need_node() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
        die "node and npm are needed to build the UI; install them (Debian: apt-get install -y nodejs npm)"
    local major
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    [ "$major" -ge 18 ] 2>/dev/null ||
        die "node $(node --version 2>/dev/null || echo '?') is too old: the UI build needs node >= 18 (Debian 12's nodejs is 18)"
}

# npm ci when node_modules is missing or older than the lock file.
install_deps() {
    local stamp="$ui/node_modules/.package-lock.json"
    if [ ! -f "$stamp" ] || [ "$ui/package-lock.json" -nt "$stamp" ]; then
        echo "corral ui: npm ci in $ui" >&2
        (cd "$ui" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
            die "npm ci failed in $ui (is the npm registry reachable?)"
    fi
}

build() {
    local out="${1:-}"
    [ -n "$out" ] || die "usage: scripts/ui.sh build OUTDIR"
    need_node
    install_deps
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    (cd "$ui" && ./node_modules/.bin/tsc --noEmit -p .) || die "type check failed (tsc --noEmit in $ui)"
    (cd "$ui" && ./node_modules/.bin/esbuild src/main.ts --bundle --minify --format=esm \
        --target=es2020 --legal-comments=none --log-level=warning \
        --outfile="$out/app.js") || die "bundling app.js failed (esbuild)"
    (cd "$ui" && ./node_modules/.bin/esbuild src/app.css --bundle --minify --log-level=warning \
        --outfile="$out/app.css") || die "bundling app.css failed (esbuild)"
    cp "$ui/index.html" "$out/index.html"
}

case "${1:-}" in
build) build "${2:-}" ;;
*) die "usage: scripts/ui.sh build OUTDIR" ;;
esac
