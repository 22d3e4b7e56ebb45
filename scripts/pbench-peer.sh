#!/usr/bin/env bash
# Installs the peer interception proxies that corral-pbench compares corral's
# egress proxy with (docs/BENCHMARKS.md, "Egress proxy"), and prints the
# versions it installed:
#
# * mitmproxy (mitmdump), pinned, in a venv (default /tmp/corral-pbench-venv;
#   PBENCH_VENV overrides). 11.0.2 is the newest release that installs on
#   Python 3.11 (12.x needs 3.12).
# * with --squid: squid with ssl-bump, Debian's squid-openssl package (root).
#   The package's own service is not used: corral-pbench starts squid with
#   its own configuration in a temporary directory.
#
# Prints the arguments to give corral-pbench on its last line.
set -euo pipefail
MITMPROXY_VERSION=11.0.2
venv=${PBENCH_VENV:-/tmp/corral-pbench-venv}
squid=no
for a in "$@"; do
    case $a in
        --squid) squid=yes ;;
        *) echo "usage: $0 [--squid]" >&2; exit 2 ;;
    esac
done

if [ ! -x "$venv/bin/mitmdump" ] || ! "$venv/bin/mitmdump" --version 2>/dev/null | grep -q "Mitmproxy: $MITMPROXY_VERSION"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "mitmproxy==$MITMPROXY_VERSION"
fi
echo "python: $("$venv/bin/python" --version 2>&1)"
"$venv/bin/mitmdump" --version | sed 's/^/mitmdump: /'
args="--peer-mitmdump $venv/bin/mitmdump"

if [ $squid = yes ]; then
    if ! command -v squid >/dev/null 2>&1 || [ ! -x /usr/lib/squid/security_file_certgen ]; then
        apt-get install -y -q squid-openssl >/dev/null
    fi
    echo "squid: $(squid -v | head -1)"
    echo "squid package: $(dpkg-query -W -f '${Package} ${Version}' squid-openssl)"
    args="$args --peer-squid $(command -v squid)"
fi
echo "corral-pbench arguments: $args"
