#!/bin/sh
# A stand-in "agent" for the demo: a few things a coding agent does, and a
# few it should not. Runs inside `corral run`.
echo "agent: read the project's README"
head -n 1 README.md
echo "agent: write a scratch file in the project"
mkdir -p target && echo ok > target/demo-agent.txt && cat target/demo-agent.txt
echo "agent: read /etc/shadow (the default policy forbids it)"
cat /etc/shadow >/dev/null && echo "  read it" || echo "  refused"
echo "agent: connect to 10.88.0.1:9 directly (no policy permits it)"
bash -c 'exec 3<>/dev/tcp/10.88.0.1/9' 2>/dev/null && echo "  connected" || echo "  refused"
echo "agent: HTTPS to example.com (the default policy does not list it; nothing leaves the host)"
curl -sS --resolve example.com:443:10.88.0.1 -o /dev/null -w '  HTTP %{http_code} from corral'"'"'s egress proxy\n' \
    https://example.com/ 2>/dev/null || echo "  refused"
echo "agent: unshare a mount namespace (refused in every session)"
unshare -Um true 2>/dev/null && echo "  unshared" || echo "  refused"
rm -f target/demo-agent.txt
exit 0
