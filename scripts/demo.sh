#!/usr/bin/env bash
# corral's main job on a sample: run a scripted "agent" (examples/demo-agent.sh)
# in a container under the built-in default policy, with enforcement in the
# kernel, and show what it was stopped from doing, from the recorded events;
# then the same run in shadow mode and the policy suggested from it. Then: validate, compile and explain the sample team policy, and show which
# kernel layer enforces each decision kind on this host.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
corral_build_deps
corral_container_deps
corral_egress_deps

cargo build --release -q -p corral-cli
corral=target/release/corral
run() { echo; echo "\$ corral $*"; "$corral" "$@"; }

run run -- ./examples/demo-agent.sh
echo
echo "What the agent was stopped from doing (from the audit store):"
run events --session last --decision deny
run sessions
echo
echo "The same agent in shadow mode (nothing blocked, each denial recorded as 'would deny'),"
echo "then the permits that would have allowed it (a forbid or a secret is never suggested):"
run run --shadow -- ./examples/demo-agent.sh
run policy suggest --session last --diff

run policy check examples/team.cedar
run policy check --workspace /workspace --home /root
run policy compile examples/team.cedar --principal claude
run policy explain examples/team.cedar --principal claude --action FileOpenReadOnly --resource /root/.ssh/id_rsa
run policy explain examples/team.cedar --principal claude --action ProcessExec --resource /usr/bin/git \
    -c 'cmdline=git push --force origin main'
run policy explain examples/team.cedar --principal claude --action NetworkConnect --resource 169.254.169.254:80
run policy explain examples/team.cedar --principal claude --action McpCall --resource execute-shell \
    -c server=mcp.example.com
run policy explain --workspace /workspace --home /root --principal claude --action FileOpenReadWrite \
    --resource /workspace/src/main.rs
# Which kernel layer enforces each decision kind on this host (probed by
# loading and attaching programs; needs root). Exit 1 only means some kind
# has no layer here; the demo goes on.
run doctor || echo "(corral doctor: some decision kind has no enforcement layer on this host)"
