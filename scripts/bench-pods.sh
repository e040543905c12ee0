#!/usr/bin/env bash
# Benchmark (not a test), issue 5 "Performance": 100 pods of a cached image created at once
# through the test API server, run by one `nodelet agent` (release build) on this machine.
# Prints:
#   - p50 and p99 of each pod's startup latency: from its creation to the first watch event
#     that shows it Running with Ready=True (target: p99 <= 1 s);
#   - the agent's resident memory (VmRSS) with the pods running (target: <= 40 MiB), and the
#     container monitor's RSS, total and per container;
#   - the agent's CPU use while idle with the pods running: utime+stime over IDLE_SECONDS
#     (default 30) as % of one core (target: <= 1%).
#
#   scripts/bench-pods.sh            # as root; N=100 IDLE_SECONDS=30 SETTLE_SECONDS=10 by default
#
# Creation time: a pod's creationTimestamp has 1 s resolution, too coarse for a 1 s target.
# The script times each pod from the client's side instead: a small Python client POSTs the
# pods one after another on one connection (about 2 ms each) and stamps each pod just before
# its POST is sent, so the POST's own round trip is counted. The first watch event (kubectl
# get -w) showing the pod Running with Ready=True is stamped as its line arrives. Both stamps
# come from this host's clock, in microseconds. The same figures measured from the start of
# the whole batch (before the first POST) are printed too, as a pessimistic bound.
#
# Everything it starts is its own: a registry on a free loopback port, the test API server in
# a temp dir, the agent with its own root dir, netns dir, bridge nlbbench<rand>, pod CIDR,
# cgroup /nodelet-bench-<rand> (the Service hook attaches to that cgroup's cgroup2 directory,
# never the root) and no bpffs pins. A trap removes it all on exit, also on failure.
# Other work on the machine makes the numbers noisy.
set -euo pipefail

N=${N:-100}
IDLE_SECONDS=${IDLE_SECONDS:-30}
SETTLE_SECONDS=${SETTLE_SECONDS:-10}
POD_CIDR=${POD_CIDR:-10.245.200.0/24}

cd "$(dirname "$0")/.."
repo=$(pwd)
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
./scripts/setup.sh >&2

if [ ! -x target/release/nodelet ] || [ ! -x target/release/nodelet-test-apiserver ] || [ -n "${BUILD:-}" ]; then
  cargo build --release -p nodelet-kubelet --bin nodelet -p nodelet-tests --bin nodelet-test-apiserver >&2
fi

suffix=$(printf '%06x' $((RANDOM * 32768 + RANDOM & 0xffffff)))
work=$(mktemp -d /tmp/nodelet-bench-pods.XXXXXX)
bridge=nlbbench${suffix:0:6}
cgname=nodelet-bench-$suffix
node=bench-$suffix
root_dir=$work/root
netns_dir=$work/netns
if [ -f /sys/fs/cgroup/unified/cgroup.procs ]; then cg2=/sys/fs/cgroup/unified/$cgname; else cg2=/sys/fs/cgroup/$cgname; fi
agent_pid= api_pid= watch_pid=
# Copies: others may rebuild target/release while the bench runs.
mkdir -p "$work/bin"
cp target/release/nodelet target/release/nodelet-test-apiserver "$work/bin/"
NODELET=$work/bin/nodelet
APISERVER=$work/bin/nodelet-test-apiserver
KUBECONFIG=$work/api/admin.kubeconfig
export KUBECONFIG

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# True when pid $1 is alive and its command line contains $2 (guards against pid reuse).
pid_is() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"; }

# SIGTERM, wait up to $3 seconds, then SIGKILL; only when the pid still is what we started.
stop_pid() {
  local pid=$1 what=$2 grace=$3
  pid_is "$pid" "$what" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 10))); do pid_is "$pid" "$what" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do pid_is "$pid" "$what" || return 0; sleep 0.1; done
}

cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/*/"$cgname" /sys/fs/cgroup/"$cgname"; do [ -d "$d" ] && echo "$d"; done
  return 0
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    log "failed (exit $rc); agent log tail:"
    tail -n 30 "$work/agent.log" >&2 2>/dev/null
  fi
  log "cleaning up"
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null
  # Pods first, through the agent, while it and the API server run.
  if pid_is "$agent_pid" "nodelet agent" && pid_is "$api_pid" nodelet-test-apiserver; then
    kubectl delete pods --all --wait=false >/dev/null 2>&1
    for _ in $(seq 1 120); do
      [ -z "$(kubectl get pods -o name 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  stop_pid "$agent_pid" "nodelet agent" 15
  local mon
  mon=$(cat "$root_dir/runtime/monitor.pid" 2>/dev/null)
  pid_is "$mon" "nodelet monitor" && kill -KILL "$mon" 2>/dev/null
  # Whatever still runs in the bench's cgroups is a container of ours.
  local d pid
  for d in $(cgroup_dirs); do
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
  done
  # Mounts under the bench's dirs, deepest first.
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($root_dir|$netns_dir)(/|$)" | awk '{print length, $0}' |
    sort -rn | cut -d' ' -f2- | while read -r m; do umount -l "$m" 2>/dev/null; done
  for v in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$v" 2>/dev/null
  done
  ip link del "$bridge" 2>/dev/null
  for d in $(cgroup_dirs); do
    for _ in $(seq 1 50); do
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$d" ] || break
      sleep 0.1
    done
    [ -d "$d" ] && log "cannot remove cgroup $d"
  done
  stop_pid "$api_pid" nodelet-test-apiserver 10
  tests/scripts/registry.sh stop "$work/registry" >/dev/null 2>&1
  # KEEP_LOGS=DIR keeps the agent's, monitor's and watch logs.
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS"
    cp "$work"/*.log "$KEEP_LOGS"/ 2>/dev/null
    cp "$root_dir/runtime/monitor.log" "$KEEP_LOGS"/ 2>/dev/null
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- registry with the test images -----------------------------------------------------
port=$(free_port)
log "registry on 127.0.0.1:$port"
tests/scripts/registry.sh start "$work/registry" "$port" >&2
tests/scripts/build-test-images.sh "127.0.0.1:$port" >&2
image=127.0.0.1:$port/nodelet/busybox:1

# --- test API server -----------------------------------------------------------------------
mkdir -p "$work/api"
setsid "$APISERVER" --dir "$work/api" --listen 127.0.0.1:0 --node-kubeconfig "$node" \
  >"$work/api.url" 2>"$work/api.log" </dev/null &
api_pid=$!
for _ in $(seq 1 100); do [ -s "$work/api.url" ] && [ -f "$KUBECONFIG" ] && break; sleep 0.1; done
[ -s "$work/api.url" ] || { cat "$work/api.log" >&2; exit 1; }
log "test API server $(cat "$work/api.url") (pid $api_pid)"

# --- agent -----------------------------------------------------------------------------------
mkdir -p "$cg2"
setsid "$NODELET" agent \
  --kubeconfig "$work/api/node-$node.kubeconfig" --node-name "$node" \
  --root-dir "$root_dir" --netns-dir "$netns_dir" --bridge "$bridge" --pod-cidr "$POD_CIDR" \
  --cgroup-root "/$cgname" --proxy-attach-cgroup "$cg2" --proxy-pin-dir "" --masquerade=false \
  --healthz-bind-address 127.0.0.1:0 >"$work/agent.log" 2>&1 </dev/null &
agent_pid=$!
log "agent pid $agent_pid, node $node, bridge $bridge, cgroup /$cgname"
for _ in $(seq 1 600); do
  [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
  pid_is "$agent_pid" "nodelet agent" || { log "agent exited"; exit 1; }
  sleep 0.1
done
[ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] || exit 1
log "node Ready"

pod_json() { # name
  printf '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s","namespace":"default"},"spec":{"nodeName":"%s","restartPolicy":"Always","terminationGracePeriodSeconds":1,"containers":[{"name":"sleep","image":"%s","command":["sleep","3600"]}]}}' \
    "$1" "$node" "$image"
}

# --- pre-pull: one pod, Ready, deleted --------------------------------------------------
pod_json prepull | kubectl create --validate=false -f - >/dev/null
kubectl wait --for=condition=Ready pod/prepull --timeout=180s >/dev/null
kubectl delete pod prepull --wait=true --timeout=120s >/dev/null
log "image cached ($image)"

# --- 100 pods at once ------------------------------------------------------------------
# Each output line is stamped with this host's clock (microseconds) as it arrives.
stamp() { python3 -u -c '
import sys, time
for line in sys.stdin:
    print("%.6f %s" % (time.time(), line.rstrip("\n")), flush=True)'; }

kubectl get pods -w --output-watch-events=false \
  -o jsonpath='{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status}{"\n"}' \
  2>"$work/watch.err" | stamp >"$work/watch.log" &
watch_pid=$!
sleep 2 # the watch is established (an initial empty list)

{
  echo '{"apiVersion":"v1","kind":"List","items":['
  for i in $(seq 1 "$N"); do
    [ "$i" -gt 1 ] && echo ','
    pod_json "$(printf 'bench-%03d' "$i")"
  done
  echo ']}'
} >"$work/pods.json"
batch_start=$(python3 -c 'import time; print("%.6f" % time.time())')
# One keep-alive HTTPS connection, the POSTs in sequence; each pod's stamp is taken just
# before its POST is sent (kubectl create -f prints its "created" lines only at the end).
kubectl config view --raw -o json >"$work/admin.json"
python3 - "$work/admin.json" "$work/pods.json" >"$work/created.log" <<'PY'
import base64, http.client, json, ssl, sys, tempfile, time, urllib.parse
cfg = json.load(open(sys.argv[1]))
cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
def tmp(b64):
    f = tempfile.NamedTemporaryFile(delete=False); f.write(base64.b64decode(b64)); f.close(); return f.name
ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
headers = {"Content-Type": "application/json"}
if "client-certificate-data" in user:
    ctx.load_cert_chain(tmp(user["client-certificate-data"]), tmp(user["client-key-data"]))
if "token" in user:
    headers["Authorization"] = "Bearer " + user["token"]
url = urllib.parse.urlparse(cluster["server"])
conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)
for pod in json.load(open(sys.argv[2]))["items"]:
    t = time.time()
    conn.request("POST", "/api/v1/namespaces/default/pods", json.dumps(pod), headers)
    r = conn.getresponse(); body = r.read()
    if r.status != 201:
        sys.exit(f"POST {pod['metadata']['name']}: {r.status} {body[:300]!r}")
    print("%.6f pod/%s created" % (t, pod["metadata"]["name"]), flush=True)
PY
log "created $N pods in $(python3 -c "import time; print('%.2f' % (time.time() - $batch_start))") s"

for _ in $(seq 1 1200); do
  ready=$(awk '$3 == "Running" && $4 == "True" {print $2}' "$work/watch.log" | grep -c '^bench-' || true)
  [ "$ready" -ge "$N" ] && break
  pid_is "$agent_pid" "nodelet agent" || { log "agent exited"; exit 1; }
  sleep 0.1
done
[ "$ready" -ge "$N" ] || { log "only $ready of $N pods Ready after 120 s"; exit 1; }
log "all $N pods Running and Ready"

python3 - "$work/created.log" "$work/watch.log" "$batch_start" "$N" <<'PY'
import sys
created_log, watch_log, batch_start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
created = {}
for line in open(created_log):
    t, what = line.split(" ", 1)
    name = what.split()[0].removeprefix("pod/")
    created[name] = float(t)
ready = {}
for line in open(watch_log):
    parts = line.split()
    if len(parts) >= 4 and parts[2] == "Running" and parts[3] == "True" and parts[1] not in ready:
        ready[parts[1]] = float(parts[0])
names = [p for p in created if p in ready]
assert len(names) == n, f"{len(names)} of {n} pods have both stamps"
def pct(values, p):  # nearest rank
    v = sorted(values); r = max(1, -(-len(v) * p // 100)); return v[int(r) - 1]
lat = [ready[p] - created[p] for p in names]
from_batch = [ready[p] - batch_start for p in names]
print(f"pods: {n}; POSTs took {max(created.values()) - batch_start:.3f} s in all")
print(f"startup (POST sent -> Running+Ready seen)     : p50 {pct(lat, 50):.3f} s  p99 {pct(lat, 99):.3f} s  max {max(lat):.3f} s   (target p99 <= 1 s)")
print(f"startup (batch start -> Running+Ready seen):   p50 {pct(from_batch, 50):.3f} s  p99 {pct(from_batch, 99):.3f} s  max {max(from_batch):.3f} s")
PY

# --- memory and idle CPU with the pods running ---------------------------------------------
sleep "$SETTLE_SECONDS"
monitor_pid=$(cat "$root_dir/runtime/monitor.pid")
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime (no field has spaces: comm is "nodelet")
running=$(find "$root_dir/runtime/containers" -mindepth 1 -maxdepth 1 -type d | wc -l)
agent_rss=$(rss_kib "$agent_pid")
monitor_rss=$(rss_kib "$monitor_pid")
hz=$(getconf CLK_TCK)
a0=$(cpu_ticks "$agent_pid"); m0=$(cpu_ticks "$monitor_pid"); t0=$(date +%s.%N)
sleep "$IDLE_SECONDS"
a1=$(cpu_ticks "$agent_pid"); m1=$(cpu_ticks "$monitor_pid"); t1=$(date +%s.%N)
agent_rss_after=$(rss_kib "$agent_pid")
awk -v a="$agent_rss" -v a2="$agent_rss_after" -v m="$monitor_rss" -v c="$running" \
    -v da=$((a1 - a0)) -v dm=$((m1 - m0)) -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN {
  printf "agent RSS: %.1f MiB (%.1f MiB after the idle window)   (target <= 40 MiB)\n", a / 1024, a2 / 1024
  printf "monitor RSS: %.1f MiB for %d containers, %.1f KiB per container\n", m / 1024, c, (c ? m / c : 0)
  printf "agent idle CPU: %.2f%% of one core over %.1f s (%d ticks)   (target <= 1%%)\n", 100 * da / hz / (t1 - t0), t1 - t0, da
  printf "monitor idle CPU: %.2f%% of one core (%d ticks)\n", 100 * dm / hz / (t1 - t0), dm
}'
echo "(noisy: other benchmarks and CI may be running on this machine)"

# --- diagnostics, after the measured window (DIAG=0 skips) ---------------------------------
if [ "${DIAG:-1}" = 1 ]; then
  echo "--- diagnostics (after the measurements) ---"
  # The size of one answer to a `list` request on the monitor socket.
  python3 - "$root_dir/runtime/monitor.sock" <<'PY'
import socket, sys, json
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'{"op":"list"}\n')
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(1 << 16)
    if not chunk: break
    data += chunk
states = json.loads(data)["states"]
print(f"monitor list answer: {len(data)} bytes of JSON for {len(states)} containers ({len(data) // max(1, len(states))} bytes each)")
PY
  # Connections (one per request) the monitor accepts while the pods idle.
  if command -v strace >/dev/null; then
    timeout -s INT 10 strace -f -qq -e trace=accept4,accept -p "$monitor_pid" -o "$work/strace.log" 2>/dev/null || true
    n_acc=$(grep -c 'accept' "$work/strace.log" 2>/dev/null || true)
    echo "monitor: ${n_acc:-0} connections accepted in 10 s while idle (one request each)"
  fi
  if command -v perf >/dev/null; then
    if perf record -q -F 499 -g -p "$agent_pid" -o "$work/perf.data" -- sleep 10 >/dev/null 2>&1; then
      echo "agent CPU profile while idle (10 s, self time, top symbols):"
      perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -25 | sed 's/ *-  *- *$//' || true
    fi
  fi
fi

# --- delete all, wait until they are gone ---------------------------------------------------
kill "$watch_pid" 2>/dev/null || true
watch_pid=
del_start=$(date +%s.%N)
kubectl delete pods --all --wait=false >/dev/null
for _ in $(seq 1 1200); do
  [ -z "$(kubectl get pods -o name 2>/dev/null)" ] && break
  sleep 0.1
done
[ -z "$(kubectl get pods -o name)" ] || { log "pods still present after 120 s"; exit 1; }
log "all pods gone in $(awk -v a="$del_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}') s"
