#!/usr/bin/env bash
# The main job on its embedded default: nodelet in standalone mode on the manifests in
# examples/ (a web-server pod and a ClusterIP Service in front of it). It builds the example
# image from Debian's busybox-static, serves it from a local registry on 127.0.0.1, runs
# `nodelet run examples/`, fetches the page through the Service's virtual IP, prints it, and
# cleans everything up. Run as root on Debian 12 with Rust.
#
# The demo keeps to a cgroup of its own (/nodelet-demo): the eBPF connect hook is attached
# there and the client runs there, so trying nodelet never changes how the rest of the
# machine connects. A real node attaches at the cgroup2 root (nodelet's default).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }

./scripts/setup.sh
echo "== building nodelet"
cargo build --release --locked -p nodelet-kubelet --bin nodelet

port=${NODELET_DEMO_REGISTRY_PORT:-5000}
work=$(mktemp -d /tmp/nodelet-demo.XXXXXX)
if mountpoint -q /sys/fs/cgroup/unified; then cg2=/sys/fs/cgroup/unified; else cg2=/sys/fs/cgroup; fi
hook_cgroup=$cg2/nodelet-demo
nodelet_pid=""

cleanup() {
  set +e
  if [ -n "$nodelet_pid" ]; then kill -TERM "$nodelet_pid" 2>/dev/null; wait "$nodelet_pid" 2>/dev/null; fi
  tests/scripts/registry.sh stop "$work/registry" >/dev/null 2>&1
  # The demo's cgroup, in every hierarchy (pods' cgroups went with the pods): deepest first.
  for dir in /sys/fs/cgroup/*/nodelet-demo; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== local registry on 127.0.0.1:$port with the example image"
tests/scripts/registry.sh start "$work/registry" "$port"
tests/scripts/build-test-images.sh "127.0.0.1:$port"
# The example manifest names the registry on port 5000; follow another port if one was chosen.
mkdir -p "$work/manifests"
sed "s#127.0.0.1:5000/#127.0.0.1:$port/#" examples/web.yaml > "$work/manifests/web.yaml"

echo "== nodelet run $work/manifests"
mkdir -p "$hook_cgroup"
# The demo's pod needs no way off the node: leave the host's firewall and forwarding alone.
target/release/nodelet run "$work/manifests" \
  --root-dir "$work/root" --cgroup-root /nodelet-demo --pod-cidr 10.88.0.0/24 \
  --proxy-attach-cgroup "$hook_cgroup" --masquerade=false &
nodelet_pid=$!

echo "== fetching http://10.96.0.80/ through the Service's virtual IP"
mkdir -p "$hook_cgroup/client"
for _ in $(seq 1 120); do
  if page=$(sh -c 'echo $$ > "$1/cgroup.procs"; exec curl -sf --max-time 2 http://10.96.0.80/' sh "$hook_cgroup/client"); then
    echo "$page"
    echo "== the page came through the ClusterIP 10.96.0.80:80 (eBPF connect4 -> pod)"
    exit 0
  fi
  kill -0 "$nodelet_pid" 2>/dev/null || { echo "demo.sh: nodelet exited" >&2; exit 1; }
  sleep 0.5
done
echo "demo.sh: no answer through the Service within 60 s" >&2
exit 1
