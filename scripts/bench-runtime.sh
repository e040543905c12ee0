#!/usr/bin/env bash
# Benchmark (not a test): create + start + wait + delete of /bin/true in a busybox bundle,
# N times (default 50), alternating nodelet-runc and Debian's runc in one run, then each
# one's median and p90 in ms and the ratio nodelet/runc (issue 3's target: at most 0.3).
# Then memory: what stays resident outside the container per running container (issue 3's
# target: at most 1 MiB), for K (default 20) sleeping containers: the runtime processes
# left by `run -d` (none: no shim), and the growth of nodelet-monitor's RSS.
#
#   scripts/bench-runtime.sh [N] [K]        # as root
#   MODE=steps scripts/bench-runtime.sh     # separate create/start/state-poll/delete commands
#
# MODE=run (default) times one foreground `run` per iteration, which does all four steps
# inside the runtime; MODE=steps times the four commands a shim would issue.
# NODELET_RUNC (default target/release/nodelet-runc), NODELET_MONITOR (default
# target/release/nodelet-monitor), both built if missing, and RUNC (default /usr/sbin/runc)
# choose the binaries.
set -euo pipefail

N=${1:-50}
K=${2:-20}
MODE=${MODE:-run}
cd "$(dirname "$0")/.."
RUNC=${RUNC:-/usr/sbin/runc}
NODELET_RUNC=${NODELET_RUNC:-target/release/nodelet-runc}
NODELET_MONITOR=${NODELET_MONITOR:-target/release/nodelet-monitor}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$RUNC" ] || { echo "$RUNC missing: apt-get install -y runc" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox missing: apt-get install -y busybox-static" >&2; exit 1; }
if [ ! -x "$NODELET_RUNC" ]; then
  cargo build --release -p nodelet-runtime --bin nodelet-runc >&2
fi
if [ ! -x "$NODELET_MONITOR" ]; then
  cargo build --release -p nodelet-runtime --bin nodelet-monitor >&2
fi
NODELET_RUNC=$(realpath "$NODELET_RUNC")
NODELET_MONITOR=$(realpath "$NODELET_MONITOR")

work=$(mktemp -d /tmp/nodelet-bench.XXXXXX)
# A cgroup parent that check-leftovers.sh would report if it were left behind.
cgparent="nodelet-test-bench-$$"
monitor_pid=
cleanup() {
  if [ -n "$monitor_pid" ]; then
    monitor_call "$work/monitor-root/monitor.sock" cleanup >/dev/null 2>&1 || true
    kill "$monitor_pid" 2>/dev/null || true
    wait "$monitor_pid" 2>/dev/null || true
  fi
  for rt in nodelet runc; do
    exe=$NODELET_RUNC; [ "$rt" = runc ] && exe=$RUNC
    for id in $("$exe" --root "$work/$rt-root" list -q 2>/dev/null); do
      "$exe" --root "$work/$rt-root" delete --force "$id" >/dev/null 2>&1 || true
    done
  done
  for h in /sys/fs/cgroup/*/"$cgparent" /sys/fs/cgroup/"$cgparent"; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The bundle: busybox, runc's default spec with /bin/true and no terminal.
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/proc" "$bundle/rootfs/sys" "$bundle/rootfs/dev"
cp /bin/busybox "$bundle/rootfs/bin/"
ln -s busybox "$bundle/rootfs/bin/true"
ln -s busybox "$bundle/rootfs/bin/sh"
ln -s busybox "$bundle/rootfs/bin/sleep"
(cd "$bundle" && "$NODELET_RUNC" spec)
python3 - "$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
# Absolute: the per-runtime bundle dirs below hold only config.json (runc refuses a symlink).
c["root"]["path"] = path.rsplit("/", 1)[0] + "/rootfs"
json.dump(c, open(path, "w"), indent=1)
PY


mkdir -p "$work/nodelet-bundle" "$work/runc-bundle"

# One iteration for runtime $1 (binary $2), number $3; prints the elapsed microseconds.
one() {
  local rt=$1 exe=$2 id="bench-$1-$3" root="$work/$1-root" t0 t1
  # Each container gets a cgroup of its own under our parent, as a kubelet would give it.
  sed "s|\"linux\": {|\"linux\": {\"cgroupsPath\": \"/$cgparent/$id\",|" "$bundle/config.json" \
    > "$work/$rt-bundle/config.json"
  # Microseconds from bash itself ($EPOCHREALTIME, bash 5): a `date` fork or a $(...)
  # subshell would add its own startup to every sample.
  t0=${EPOCHREALTIME/[.,]/}
  if [ "$MODE" = run ]; then
    "$exe" --root "$root" run --bundle "$work/$rt-bundle" "$id" </dev/null >/dev/null
  else
    "$exe" --root "$root" create --bundle "$work/$rt-bundle" "$id" </dev/null >/dev/null
    "$exe" --root "$root" start "$id"
    # grep reads all (no -q): a reader gone early would break the runtime's pipe.
    until "$exe" --root "$root" state "$id" | grep '"status": "stopped"' >/dev/null; do :; done
    "$exe" --root "$root" delete "$id"
  fi
  t1=${EPOCHREALTIME/[.,]/}
  echo $(( 10#$t1 - 10#$t0 ))
}

declare -a nodelet_us runc_us
for i in $(seq 1 "$N"); do
  t=$(one nodelet "$NODELET_RUNC" "$i") || { echo "nodelet-runc failed (iteration $i)" >&2; exit 1; }
  nodelet_us+=("$t")
  t=$(one runc "$RUNC" "$i") || { echo "runc failed (iteration $i)" >&2; exit 1; }
  runc_us+=("$t")
done

# median and p90 (nearest rank) in ms with two decimals, from microsecond samples.
stats() {
  sort -n | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    r = int(0.9 * NR + 0.999999); if (r < 1) r = 1
    printf "%.2f %.2f\n", m / 1000, v[r] / 1000 }'
}
read -r n_med n_p90 < <(printf '%s\n' "${nodelet_us[@]}" | stats)
read -r r_med r_p90 < <(printf '%s\n' "${runc_us[@]}" | stats)
echo "create+start+wait+delete of /bin/true, $N iterations each, alternating (mode: $MODE)"
printf '%-14s median %8s ms   p90 %8s ms\n' "nodelet-runc" "$n_med" "$n_p90" "runc" "$r_med" "$r_p90"
awk -v n="$n_med" -v r="$r_med" 'BEGIN { printf "ratio (nodelet/runc, medians): %.3f (target <= 0.3)\n", n / r }'

# --- Memory per running container, outside the container --------------------------------

# Sum of VmRSS (KiB) of the processes running binary $1 (the runtime's own processes).
rss_of() {
  local total=0 exe rss
  for exe in /proc/[0-9]*/exe; do
    [ "$(readlink "$exe" 2>/dev/null)" = "$1" ] || continue
    rss=$(awk '/^VmRSS:/ { print $2 }' "${exe%/exe}/status" 2>/dev/null || echo 0)
    total=$((total + ${rss:-0}))
  done
  echo "$total"
}

# A bundle per container (config.json only, the shared rootfs), sleeping, in its own cgroup.
sleep_bundle() {
  local dir=$work/sleep-$1 id=$1
  mkdir -p "$dir"
  python3 - "$bundle/config.json" "$dir/config.json" "/$cgparent/$id" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["/bin/sleep", "3600"]
c["linux"]["cgroupsPath"] = sys.argv[3]
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
  echo "$dir"
}

# runc-style CLIs: K containers with `run -d`; what of the runtime stays resident?
detached_rss() {
  local rt=$1 exe=$2 root="$work/$1-mem-root" i
  for i in $(seq 1 "$K"); do
    "$exe" --root "$root" run -d --bundle "$(sleep_bundle "mem-$rt-$i")" "mem-$rt-$i" </dev/null >/dev/null 2>&1
  done
  echo "$(rss_of "$exe") $(ls "$root" | wc -l)"
  for i in $(seq 1 "$K"); do
    "$exe" --root "$root" delete --force "mem-$rt-$i" >/dev/null 2>&1 || true
  done
}

# One request to the monitor at socket $1 (a JSON line, answered by one line); `cleanup`
# force-deletes every container it knows.
monitor_call() {
  python3 - "$@" <<'PY'
import json, socket, sys
def call(req):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall((json.dumps(req) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        data = s.recv(65536)
        if not data:
            break
        buf += data
    s.close()
    answer = json.loads(buf)
    if answer.get("result") == "error":
        sys.exit("monitor: " + answer["message"])
    return answer
if sys.argv[2] == "cleanup":
    for st in call({"op": "list"})["states"]:
        call({"op": "delete", "id": st["id"], "force": True})
else:
    call(json.loads(sys.argv[2]))
PY
}

# nodelet-monitor parents every container itself: its RSS growth per container.
monitor_rss() {
  local mroot=$work/monitor-root sock i id dir before after
  mkdir -p "$mroot"
  RUST_LOG=warn "$NODELET_MONITOR" --root "$mroot" 2>"$work/monitor.log" &
  monitor_pid=$!
  sock=$mroot/monitor.sock
  for i in $(seq 1 500); do [ -S "$sock" ] && break; sleep 0.01; done
  [ -S "$sock" ] || { echo "nodelet-monitor did not start: $(cat "$work/monitor.log")" >&2; return 1; }
  # One container first, so that what the monitor allocates once is not counted per container.
  for id in mem-warm; do
    dir=$(sleep_bundle "$id")
    monitor_call "$sock" "{\"op\":\"create\",\"id\":\"$id\",\"bundle\":\"$dir\",\"log_path\":\"$work/$id.log\"}"
    monitor_call "$sock" "{\"op\":\"start\",\"id\":\"$id\"}"
    monitor_call "$sock" "{\"op\":\"delete\",\"id\":\"$id\",\"force\":true}"
  done
  before=$(awk '/^VmRSS:/ { print $2 }' "/proc/$monitor_pid/status")
  for i in $(seq 1 "$K"); do
    id=mem-monitor-$i
    dir=$(sleep_bundle "$id")
    monitor_call "$sock" "{\"op\":\"create\",\"id\":\"$id\",\"bundle\":\"$dir\",\"log_path\":\"$work/$id.log\"}"
    monitor_call "$sock" "{\"op\":\"start\",\"id\":\"$id\"}"
  done
  after=$(awk '/^VmRSS:/ { print $2 }' "/proc/$monitor_pid/status")
  echo "$before $after"
  monitor_call "$sock" cleanup
  kill "$monitor_pid"
  wait "$monitor_pid" 2>/dev/null || true
  monitor_pid=
}

echo
echo "memory outside the container, $K running containers (target <= 1024 KiB per container)"
for rt in nodelet runc; do
  exe=$NODELET_RUNC; [ "$rt" = runc ] && exe=$RUNC
  read -r rss count < <(detached_rss "$rt" "$exe")
  printf '%-22s %3s containers: %6s KiB resident runtime processes, %4s KiB per container\n' \
    "$(basename "$exe") run -d" "$count" "$rss" "$((rss / K))"
done
# In this shell (not a subshell), so that the EXIT trap knows the monitor's pid.
monitor_rss >"$work/monitor-rss"
read -r before after <"$work/monitor-rss"
awk -v b="$before" -v a="$after" -v k="$K" 'BEGIN {
  printf "%-22s %3d containers: RSS %6d -> %6d KiB, %4.0f KiB per container\n",
    "nodelet-monitor", k, b, a, (a - b) / k }'
