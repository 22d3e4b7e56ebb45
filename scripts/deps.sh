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
    corral_apt_install build-essential pkg-config clang llvm bpftool libbpf-dev
    if ! corral_need_cmd cargo; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "corral: cargo (Rust >= 1.87) is not installed; Debian 12's rustc is too old." >&2
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
