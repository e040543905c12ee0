#!/usr/bin/env bash
# Benchmark (not a test): create + start + wait + delete of /bin/true in a busybox bundle,
# N times (default 50), alternating nodelet-runc and Debian's runc in one run, then each
# one's median and p90 in ms and the ratio nodelet/runc (issue 3's target: at most 0.3).
#
#   scripts/bench-runtime.sh [N]            # as root
#   MODE=steps scripts/bench-runtime.sh     # separate create/start/state-poll/delete commands
#
# MODE=run (default) times one foreground `run` per iteration, which does all four steps
# inside the runtime; MODE=steps times the four commands a shim would issue.
# NODELET_RUNC (default target/release/nodelet-runc, built if missing) and RUNC
# (default /usr/sbin/runc) choose the binaries.
set -euo pipefail

N=${1:-50}
MODE=${MODE:-run}
cd "$(dirname "$0")/.."
RUNC=${RUNC:-/usr/sbin/runc}
NODELET_RUNC=${NODELET_RUNC:-target/release/nodelet-runc}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$RUNC" ] || { echo "$RUNC missing: apt-get install -y runc" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox missing: apt-get install -y busybox-static" >&2; exit 1; }
if [ ! -x "$NODELET_RUNC" ]; then
  cargo build --release -p nodelet-runtime --bin nodelet-runc >&2
fi
NODELET_RUNC=$(realpath "$NODELET_RUNC")

work=$(mktemp -d /tmp/nodelet-bench.XXXXXX)
# A cgroup parent that check-leftovers.sh would report if it were left behind.
cgparent="nodelet-test-bench-$$"
cleanup() {
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
    until "$exe" --root "$root" state "$id" | grep -q '"status": "stopped"'; do :; done
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
