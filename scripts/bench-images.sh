#!/usr/bin/env bash
# Benchmark (not a test) of issue 4's "Faster": pull and unpack an image of about 100 MB in
# 6 gzip layers (tests/scripts/build-bench-image.sh: ~101 MiB of content, ~100 MiB of gzip)
# from a local docker-registry on 127.0.0.1, N times (default 5), alternating in one run:
#
#   nodelet        `nodelet image pull --root-dir FRESH REF` (cold: an empty store)
#   skopeo+umoci   `skopeo copy docker://REF oci:FRESH:tag` then `umoci unpack` into a fresh
#                  bundle (the same work with Debian's tools)
#
# and prints both medians and the ratio nodelet / skopeo+umoci (target: at most 0.5).
# Second figure: 20 concurrent pulls of the same uncached image through ONE image store
# (runtime/examples/concurrent_pulls.rs; the dedup is in-process) and the number of blob
# GETs the registry's access log shows for them (target: one per layer).
#
#   scripts/bench-images.sh [N]        # as root
#   NODELET=path/to/nodelet CONCURRENT_PULLS=path/to/concurrent_pulls scripts/bench-images.sh
#                                      # skip the release builds, use these binaries
#
# Each side's directories are removed after its sample (outside the timing). Everything
# (registry, its storage, the stores) lives in one temp dir removed on exit.
set -euo pipefail

N=${1:-5}
CONCURRENT=${CONCURRENT:-20}
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
./scripts/setup.sh >&2

work=$(mktemp -d /tmp/nodelet-bench-images.XXXXXX)
cleanup() {
  tests/scripts/registry.sh stop "$work/registry" >&2 || true
  rm -rf "$work"
}
trap cleanup EXIT

# A free port on loopback: a random one no socket listens on.
listening=$(ss -Hltn | awk '{ print $4 }')
while :; do
  port=$((20000 + RANDOM % 40000))
  grep -q ":$port\$" <<<"$listening" || break
done
registry=127.0.0.1:$port
# The access log (off in registry.sh's config; distribution reads overrides from the
# environment) gives one line per request: the blob GETs are counted from it.
REGISTRY_LOG_ACCESSLOG_DISABLED=false tests/scripts/registry.sh start "$work/registry" "$port" >&2
log=$work/registry/registry.log

tests/scripts/build-bench-image.sh "$registry" >&2
ref=$registry/nodelet/bench:1

# Copies, so that a build by someone else in the shared target dir cannot swap a binary
# mid-run. NODELET / CONCURRENT_PULLS (paths) skip the builds.
if [ -z "${NODELET:-}" ]; then
  cargo build --release -p nodelet-kubelet --bin nodelet >&2
  NODELET=target/release/nodelet
fi
if [ -z "${CONCURRENT_PULLS:-}" ]; then
  cargo build --release -p nodelet-runtime --example concurrent_pulls >&2
  CONCURRENT_PULLS=target/release/examples/concurrent_pulls
fi
mkdir -p "$work/bin"
cp "$NODELET" "$work/bin/nodelet"
cp "$CONCURRENT_PULLS" "$work/bin/concurrent_pulls"
nodelet=$work/bin/nodelet
concurrent_pulls=$work/bin/concurrent_pulls

now() { echo "${EPOCHREALTIME/[.,]/}"; }

# One sample of side $1; prints the elapsed microseconds.
one() {
  local side=$1 dir=$work/run t0 t1
  rm -rf "$dir"
  mkdir -p "$dir"
  t0=$(now)
  if [ "$side" = nodelet ]; then
    "$nodelet" image pull --root-dir "$dir/root" "$ref" </dev/null >/dev/null 2>"$work/err" ||
      { cat "$work/err" >&2; return 1; }
  else
    skopeo --insecure-policy copy -q --src-tls-verify=false "docker://$ref" "oci:$dir/oci:bench" >/dev/null &&
      umoci unpack --image "$dir/oci:bench" "$dir/bundle" >/dev/null 2>"$work/err" ||
      { cat "$work/err" >&2; return 1; }
  fi
  t1=$(now)
  rm -rf "$dir"
  echo $((10#$t1 - 10#$t0))
}

declare -a nodelet_us skopeo_us
for i in $(seq 1 "$N"); do
  # Alternate which side goes first, so neither always runs right after the other's rm.
  order="nodelet skopeo"
  [ $((i % 2)) = 0 ] && order="skopeo nodelet"
  for side in $order; do
    t=$(one "$side") || { echo "$side failed (iteration $i)" >&2; exit 1; }
    if [ "$side" = nodelet ]; then nodelet_us+=("$t"); else skopeo_us+=("$t"); fi
    printf 'iteration %d  %-8s %8.1f ms\n' "$i" "$side" "$(awk -v t="$t" 'BEGIN { print t / 1000 }')" >&2
  done
done

median() {
  sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f\n", m / 1000 }'
}
n_med=$(printf '%s\n' "${nodelet_us[@]}" | median)
s_med=$(printf '%s\n' "${skopeo_us[@]}" | median)

# --- 20 concurrent pulls of one uncached image in one store ---------------------------------
layers=$(skopeo inspect --tls-verify=false --raw "docker://$ref" | jq -r '.layers[].digest')
nlayers=$(wc -l <<<"$layers")
before=$(wc -l <"$log")
"$concurrent_pulls" "$work/concurrent" "$ref" "$CONCURRENT" >"$work/concurrent.out"
sleep 0.5 # the registry writes its access log line after the response
blob_gets=$(tail -n +"$((before + 1))" "$log" | grep -E '"GET /v2/nodelet/bench/blobs/sha256:[0-9a-f]+ ' || true)
layer_gets=0
max_per_layer=0
for digest in $layers; do
  c=$(grep -c "/blobs/$digest " <<<"$blob_gets" || true)
  layer_gets=$((layer_gets + c))
  ((c > max_per_layer)) && max_per_layer=$c
done
wall=$(tail -n 1 "$work/concurrent.out")
slowest=$(grep '^pull' "$work/concurrent.out" | awk '{ print $3 }' | sort -n | tail -n 1)

size=$(skopeo inspect --tls-verify=false --raw "docker://$ref" | jq '[.layers[].size] | add / 1048576 * 10 | floor / 10')
echo
echo "pull + unpack of $ref ($nlayers gzip layers, $size MiB), $N iterations each, alternating"
printf '%-14s median %9s ms\n' nodelet "$n_med" "skopeo+umoci" "$s_med"
awk -v n="$n_med" -v s="$s_med" 'BEGIN { printf "ratio (nodelet / skopeo+umoci, medians): %.3f (target <= 0.5)\n", n / s }'
echo
echo "$wall (slowest pull $slowest ms)"
echo "layer blob GETs in the registry log: $layer_gets for $nlayers layers (most for one layer: $max_per_layer; target 1 each)"
