#!/usr/bin/env bash
# Instructions per request on the ladder's steering rungs (L2, L3, outbound), counted by
# valgrind's callgrind: unlike CPU time, the count does not move with the machine's other
# load, so two builds can be compared on a noisy VM (README, "Instructions per request").
#
#   tests/benches/instructions.sh [LADDER_BINARY]   (default: target/release/ladder)
#
# Needs valgrind (callgrind_control) and python3. It runs `ladder --hold 25` with the
# pass-through and the gateways under callgrind (`LADDER_WRAP`, tests/src/ladder/setup.rs),
# switches instrumentation on for 15 s inside each rung's window, dumps the counts, and
# divides the total by the number of responses written (`ssp_gateway::web::respond`, once
# per request in both the pass-through and the gateway). User space only: the kernel's
# share (about half of L2's CPU) is not counted.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/ladder}
out=$(mktemp -d)
ladder=
# On any exit, the ladder and its children (those under valgrind among them) go too.
trap 'if [ -n "$ladder" ]; then pkill -P "$ladder" 2>/dev/null; kill "$ladder" 2>/dev/null; fi; rm -rf "$out"' EXIT

LADDER_WRAP="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/cg.%p" \
LADDER_WRAP_ROLES=passthrough,gateway \
  "$bin" --hold 25 >"$out/hold.log" 2>&1 &
ladder=$!
seen=0
while kill -0 "$ladder" 2>/dev/null; do
  n=$(grep -c '^hold:' "$out/hold.log" || true)
  if [ "$n" -gt "$seen" ]; then
    pid=$(grep '^hold:' "$out/hold.log" | sed -n "${n}p" | sed 's/.*server PIDs \([0-9]*\).*/\1/')
    # Past the warm-up, then 15 s of the rung's 25.
    sleep 4
    callgrind_control -z "$pid" >/dev/null 2>&1
    callgrind_control -i on "$pid" >/dev/null 2>&1
    sleep 15
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    dump=$(ls -t "$out"/cg."$pid".* 2>/dev/null | head -1)
    [ -n "$dump" ] || { echo "no callgrind dump from PID $pid; the ladder said:" >&2; tail "$out/hold.log" >&2; exit 1; }
    mv "$dump" "$out/rung-$seen.out"
    seen=$n
  fi
  sleep 0.2
done
wait "$ladder"
ladder=

python3 - "$out" <<'EOF'
import re, sys
names = ["L2 TLS pass-through", "L3 gateway inbound", "outbound, gateway X's share"]
for k, name in enumerate(names):
    ids, total, calls, cfn = {}, 0, 0, None
    for line in open(f"{sys.argv[1]}/rung-{k}.out", errors="replace"):
        if line.startswith("totals:"):
            total = int(line.split()[1])
        m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            if m.group(2):
                ids[m.group(1)] = m.group(2)
            cfn = m.group(1) if line.startswith("cfn=") else None
            continue
        m = re.match(r"^calls=(\d+)", line)
        if m and cfn is not None:
            if ids.get(cfn) == "ssp_gateway::web::respond":
                calls += int(m.group(1))
            cfn = None
    if not calls:
        sys.exit(f"{name}: no calls of ssp_gateway::web::respond counted")
    print(f"{name:32} {calls:7} requests  {total / calls:9.0f} instructions per request")
EOF
