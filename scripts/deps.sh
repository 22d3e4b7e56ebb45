#!/usr/bin/env bash
# Installs (Debian, as root) or names the system packages corral's build and
# tests need. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

corral_need_cmd() { command -v "$1" >/dev/null 2>&1; }

corral_apt_install() {
    # $@: Debian package names.
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! corral_need_cmd apt-get; then
        echo "corral: missing system packages: ${missing[*]}" >&2
        echo "corral: install them (as root: apt-get install -y ${missing[*]}) and run again" >&2
        exit 3
    fi
    echo "corral: installing ${missing[*]} (apt-get)" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}

corral_build_deps() {
    # A C compiler for crates with build scripts (cedar's stack-growth helper);
    # clang, llvm and bpftool build the BPF programs (corral-kernel/build.rs
    # compiles bpf/*.bpf.c against the running kernel's BTF); libbpf-dev
    # provides bpf_helpers.h.
    # Node and npm build the control UI (scripts/ui.sh, run by
    # corral-server's build.rs); a newer node from elsewhere is fine.
    corral_apt_install build-essential pkg-config clang llvm bpftool libbpf-dev
    if ! corral_need_cmd npm; then corral_apt_install nodejs npm; fi
    if ! corral_need_cmd cargo; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "corral: cargo (Rust >= 1.89) is not installed; Debian 12's rustc is too old." >&2
            echo "corral: install a current toolchain with rustup (https://rustup.rs), then run again" >&2
            exit 3
        fi
    fi
}

corral_vm_deps() {
    # The BPF LSM tests boot Debian's own kernel under QEMU (the host
    # kernel may refuse BPF LSM programs): qemu, the kernel, and a static
    # busybox for the initramfs.
    corral_apt_install qemu-system-x86 linux-image-amd64 busybox-static
}

corral_container_deps() {
    # Sessions run in podman containers; podman needs runc on hosts with a
    # hybrid cgroup layout (crun refuses it). tmux drives the interactive
    # session test.
    corral_apt_install podman runc tmux
}

corral_agent_deps() {
    # The real-agent tests run Claude Code and Codex installed from npm on
    # the host (default mode runs host-installed agents).
    # Node may come from elsewhere than Debian (a newer one): only install
    # Debian's when there is none.
    if ! corral_need_cmd npm; then corral_apt_install nodejs npm; fi
    local missing=()
    corral_need_cmd claude || missing+=("@anthropic-ai/claude-code")
    corral_need_cmd codex || missing+=("@openai/codex")
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "corral: installing ${missing[*]} (npm, global)" >&2
    npm install -g --no-audit --no-fund --loglevel=error "${missing[@]}" >/dev/null
}

corral_egress_deps() {
    # The egress tests run real clients inside a session (curl, Python's
    # urllib, Node's fetch) against servers in a network namespace the test
    # makes with iproute2. Node comes with corral_agent_deps.
    corral_apt_install curl python3 iproute2 ca-certificates
}

corral_mcp_deps() {
    # The MCP tests drive real MCP servers from npm with the official Python
    # SDK from PyPI. Both go under /var/cache/corral/mcp-test, which sessions
    # see read-only (/tmp and /root they do not see):
    #   node_modules/.bin/mcp-server-everything, mcp-server-filesystem
    #   venv/bin/python  (with the `mcp` package)
    # Pinned to the newest releases on 2026-09 (bump together, on purpose):
    local everything=2026.8.31 filesystem=2026.8.31 mcp=2.3.0
    local dir=/var/cache/corral/mcp-test
    local stamp="$dir/.installed"
    local want="server-everything=$everything server-filesystem=$filesystem mcp=$mcp"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dir/venv/bin/python" ] &&
        [ -x "$dir/node_modules/.bin/mcp-server-everything" ] &&
        [ -x "$dir/node_modules/.bin/mcp-server-filesystem" ]; then
        return 0
    fi
    # Debian's python, not a user's (pyenv shims live under /root, which
    # sessions cannot see). Node and npm come with corral_agent_deps.
    corral_apt_install python3 python3-venv
    if ! corral_need_cmd npm; then corral_apt_install nodejs npm; fi
    echo "corral: installing MCP test servers and the Python mcp SDK into $dir" >&2
    mkdir -p "$dir"
    rm -f "$stamp"
    npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error \
        "@modelcontextprotocol/server-everything@$everything" \
        "@modelcontextprotocol/server-filesystem@$filesystem" >/dev/null
    [ -x "$dir/venv/bin/python" ] || /usr/bin/python3 -m venv "$dir/venv"
    "$dir/venv/bin/python" -m pip install -q --disable-pip-version-check "mcp==$mcp"
    chmod -R a+rX "$dir"
    echo "$want" >"$stamp"
}

corral_ui_browser_deps() {
    # The UI's browser tests (crates/corral-server/tests/browser.rs) drive
    # Debian's chromium with playwright-core from npm (no browser download:
    # it launches /usr/bin/chromium). playwright-core goes under
    # /var/cache/corral/ui-test/node; the test finds it there.
    # Node builds the UI itself (scripts/ui.sh; corral_build_deps has it).
    # playwright-core 1.65 declares node >= 20 (Debian 12 ships 18; the
    # browser test skips, saying so, on an older node).
    local playwright=1.65.1
    local dir=/var/cache/corral/ui-test/node
    local stamp="$dir/.installed"
    local want="playwright-core=$playwright"
    corral_apt_install chromium
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
        [ -f "$dir/node_modules/playwright-core/package.json" ]; then
        return 0
    fi
    if ! corral_need_cmd npm; then corral_apt_install nodejs npm; fi
    echo "corral: installing playwright-core $playwright into $dir" >&2
    mkdir -p "$dir"
    rm -f "$stamp"
    npm install --prefix "$dir" --no-audit --no-fund --save-exact --loglevel=error \
        "playwright-core@$playwright" >/dev/null
    echo "$want" >"$stamp"
}

corral_ui_api_deps() {
    # corral-server's API fuzzing (crates/corral-server/tests/schemathesis.rs)
    # runs schemathesis from PyPI against /api/openapi.json. Its venv sits
    # beside the UI's browser-test files: /var/cache/corral/ui-test/venv.
    # Pinned to the newest release on 2026-11 (bump on purpose).
    local schemathesis=4.32.5
    local dir=/var/cache/corral/ui-test
    local stamp="$dir/.schemathesis-installed"
    local want="schemathesis=$schemathesis"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dir/venv/bin/schemathesis" ]; then
        return 0
    fi
    corral_apt_install python3 python3-venv
    echo "corral: installing schemathesis $schemathesis into $dir/venv" >&2
    mkdir -p "$dir"
    rm -f "$stamp"
    [ -x "$dir/venv/bin/python" ] || /usr/bin/python3 -m venv "$dir/venv"
    "$dir/venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$schemathesis"
    chmod -R a+rX "$dir"
    echo "$want" >"$stamp"
}
