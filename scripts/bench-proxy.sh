#!/usr/bin/env bash
# Benchmark (not a test), issue 6 item 1: programming time of 1,000, 5,000 and 10,000
# ClusterIP Services of 10 endpoints each through nodelet's eBPF datapath, against the same
# Services as kube-proxy-style iptables rules (iptables-restore) and as IPVS (ipvsadm -R),
# side by side in one run, and the time one endpoint change takes to be live: as the full
# rebuild the proxy did before partial syncs, and as the partial sync it does now (the changed
# EndpointSlice handed to the reconciler until the map write returned).
#
#   scripts/bench-proxy.sh            # as root
#   NODELET_BENCH_SIZES=1000 NODELET_BENCH_REPEAT=5 scripts/bench-proxy.sh
#
# BPF is attached only to a cgroup the bench creates (<cgroup2 root>/nodelet-bench-<id>);
# iptables and ipvsadm run only inside a network namespace it creates (nodelet-bench-<id>).
# Both are removed on exit, by the bench and again by this script's trap.
set -euo pipefail

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for tool in ip iptables-restore; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install -y iproute2 iptables" >&2; exit 1; }
done
command -v ipvsadm >/dev/null || echo "ipvsadm missing (apt-get install -y ipvsadm): the ipvs column will be n/a" >&2

id=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
name="nodelet-bench-$id"
export NODELET_BENCH_ID=$id
cleanup() {
  ip netns delete "$name" 2>/dev/null || true
  ip netns delete "$name-ipt" 2>/dev/null || true
  for dir in /sys/fs/cgroup/unified/"$name" /sys/fs/cgroup/"$name"; do
    [ -d "$dir" ] && rmdir "$dir" 2>/dev/null || true
  done
  rm -rf "${TMPDIR:-/tmp}/$name"
}
trap cleanup EXIT

# Build in release, then run the bench binary directly.
cargo build --release -p nodelet-proxy --bench programming >&2
exe=$(cargo build --release -p nodelet-proxy --bench programming --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "programming" and m.get("executable"):
        print(m["executable"])')
[ -x "$exe" ] || { echo "bench binary not found" >&2; exit 1; }
"$exe"
