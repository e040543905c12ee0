#!/usr/bin/env bash
# Benchmark (not a test), issue 6 item 2: request latency and throughput to a pod through a
# ClusterIP programmed by nodelet (socket-level eBPF), directly to the pod IP, and through an
# iptables DNAT rule (the shape of kube-proxy's rule at its cheapest: one DNAT, no chains),
# side by side in one run, alternating. wrk (HTTP, keep-alive) gives requests/s and the p50
# and p99 latency; iperf3 gives TCP throughput.
#
#   scripts/bench-proxy-datapath.sh            # as root; ROUNDS=3 SECONDS_EACH=8 by default
#
# Everything is the bench's own: two network namespaces joined by a veth pair (client
# 10.250.0.1, server 10.250.0.2; both ends created inside the namespaces, never on the host),
# a cgroup2 directory nodelet-bench-<id> that the client joins and the eBPF programs attach
# to, and the servers it starts. The trap removes all of it. The ClusterIPs (10.96.250.x)
# exist only in the client namespace's view.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-8}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
./scripts/setup.sh >&2
for tool in wrk iperf3 iptables ip python3; do
  command -v "$tool" >/dev/null || { echo "$tool missing (scripts/setup.sh installs it)" >&2; exit 1; }
done

id=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
client=nlb-$id-c
server=nlb-$id-s
if [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then cg=/sys/fs/cgroup/unified/nodelet-bench-$id; else cg=/sys/fs/cgroup/nodelet-bench-$id; fi
work=$(mktemp -d /tmp/nodelet-bench-datapath.XXXXXX)
pids=()

cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  ip netns delete "$client" 2>/dev/null
  ip netns delete "$server" 2>/dev/null
  for _ in $(seq 1 50); do [ -d "$cg" ] || break; rmdir "$cg" 2>/dev/null || sleep 0.1; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -p nodelet-proxy --example static_services --example http_server >&2
cp target/release/examples/static_services target/release/examples/http_server "$work/"

# --- topology --------------------------------------------------------------------------------
ip netns add "$client"
ip netns add "$server"
ip link add "nlbc$id" netns "$client" type veth peer name "nlbs$id" netns "$server"
ip -n "$client" addr add 10.250.0.1/24 dev "nlbc$id"
ip -n "$server" addr add 10.250.0.2/24 dev "nlbs$id"
for ns in "$client" "$server"; do ip -n "$ns" link set lo up; done
ip -n "$client" link set "nlbc$id" up
ip -n "$server" link set "nlbs$id" up
# iptables DNAT rewrites after the routing decision: the VIPs need a route (inside the netns).
ip -n "$client" route add default via 10.250.0.2
mkdir "$cg"

# --- servers -----------------------------------------------------------------------------------
ip netns exec "$server" "$work/http_server" 10.250.0.2:8080 2>"$work/http.log" &
pids+=($!)
ip netns exec "$server" iperf3 -s -B 10.250.0.2 -p 5201 >"$work/iperf3.log" 2>&1 &
pids+=($!)

# --- the two ways to a ClusterIP -------------------------------------------------------------------
cat >"$work/services.yaml" <<'EOF'
kind: Service
apiVersion: v1
metadata: {name: web, namespace: bench}
spec: {clusterIP: 10.96.250.10, ports: [{name: http, port: 80, targetPort: 8080}]}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: web-1, namespace: bench, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.250.0.2], conditions: {ready: true}}]
---
kind: Service
apiVersion: v1
metadata: {name: iperf, namespace: bench}
spec: {clusterIP: 10.96.250.11, ports: [{name: iperf, port: 5201, targetPort: 5201}]}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {name: iperf-1, namespace: bench, labels: {kubernetes.io/service-name: iperf}}
addressType: IPv4
ports: [{name: iperf, port: 5201}]
endpoints: [{addresses: [10.250.0.2], conditions: {ready: true}}]
EOF
"$work/static_services" "$work/services.yaml" "$cg" 2>"$work/static_services.log" &
pids+=($!)
ip netns exec "$client" iptables -t nat -A OUTPUT -d 10.96.250.20/32 -p tcp --dport 80 -j DNAT --to-destination 10.250.0.2:8080
ip netns exec "$client" iptables -t nat -A OUTPUT -d 10.96.250.21/32 -p tcp --dport 5201 -j DNAT --to-destination 10.250.0.2:5201

# In the bench's cgroup (where the eBPF programs see its connects) and the client netns. The
# cgroup is joined first: `ip netns exec` mounts a fresh /sys, without the cgroup mounts.
in_client() { sh -c 'echo $$ >"$0/cgroup.procs" && ns=$1 && shift && exec ip netns exec "$ns" "$@"' "$cg" "$client" "$@"; }

# Wait until every path answers.
for _ in $(seq 1 100); do
  ok=0
  for url in http://10.250.0.2:8080/ http://10.96.250.10/ http://10.96.250.20/; do
    in_client wrk -t1 -c1 -d1s "$url" >/dev/null 2>&1 && ok=$((ok + 1))
  done
  [ "$ok" = 3 ] && break
  sleep 0.2
done
[ "$ok" = 3 ] || { echo "not every path answers; static_services log:" >&2; cat "$work/static_services.log" >&2; exit 1; }

declare -A http_target=([direct]=http://10.250.0.2:8080/ [nodelet]=http://10.96.250.10/ [iptables]=http://10.96.250.20/)
declare -A iperf_target=([direct]="10.250.0.2 5201" [nodelet]="10.96.250.11 5201" [iptables]="10.96.250.21 5201")
modes=(direct nodelet iptables)

# wrk's "Requests/sec" and its 50% and 99% latencies, in microseconds.
parse_wrk() {
  python3 -c '
import re, sys
text = sys.stdin.read()
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50, p99 = (us(*re.search(r"\s" + p + r"%\s+([\d.]+)(us|ms|s)", text).groups()) for p in ("50", "99"))
print("%.0f %.1f %.1f" % (rps, p50, p99))'
}

results=$work/results.txt
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round, so no mode always runs first.
  order=("${modes[@]:$(((round - 1) % 3))}" "${modes[@]:0:$(((round - 1) % 3))}")
  for mode in "${order[@]}"; do
    read -r rps p50 p99 < <(in_client wrk -t1 -c32 -d"${SECONDS_EACH}s" --latency "${http_target[$mode]}" | parse_wrk)
    read -r host port <<<"${iperf_target[$mode]}"
    gbits=$(in_client iperf3 -c "$host" -p "$port" -t "$SECONDS_EACH" -J |
      python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))')
    echo "$mode $rps $p50 $p99 $gbits" >>"$results"
    printf 'round %d %-9s %8s req/s  p50 %7s us  p99 %7s us  %6s Gbit/s\n' "$round" "$mode" "$rps" "$p50" "$p99" "$gbits" >&2
  done
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {}
for mode in ("direct", "nodelet", "iptables"):
    mine = [r for r in rows if r[0] == mode]
    med[mode] = [statistics.median(float(r[i]) for r in mine) for i in range(1, 5)]
print()
print(f"medians of {len(rows) // 3} rounds (wrk -t1 -c32, keep-alive; iperf3 one TCP stream); ratio = mode / direct")
print(f"{'path':<26} {'req/s':>9} {'ratio':>6} {'p50 us':>8} {'p99 us':>8} {'p99 ratio':>9} {'Gbit/s':>7} {'ratio':>6}")
names = {"direct": "direct to the pod IP", "nodelet": "ClusterIP, nodelet eBPF", "iptables": "ClusterIP, iptables DNAT"}
for mode in ("direct", "nodelet", "iptables"):
    rps, p50, p99, gb = med[mode]
    d = med["direct"]
    print(f"{names[mode]:<26} {rps:>9.0f} {rps / d[0]:>6.3f} {p50:>8.1f} {p99:>8.1f} {p99 / d[2]:>9.3f} {gb:>7.2f} {gb / d[3]:>6.3f}")
n, d = med["nodelet"], med["direct"]
worst = max(abs(1 - n[0] / d[0]), abs(1 - n[3] / d[3]), max(0.0, n[1] / d[1] - 1))
print(f"\nnodelet vs direct: within {worst * 100:.1f}% (target: within 3%)")
print("(2 cores: wrk, the server and the kernel share them; run on an idle machine)")
EOF
