#!/usr/bin/env bash
# Build the pull benchmark's image (scripts/bench-images.sh) and push it to a (loopback,
# plain-HTTP) registry as REGISTRY/nodelet/bench:1, an OCI manifest with 6 gzip layers:
#
#   layer 1     busybox-static and its applet symlinks in /bin, /etc/passwd, /etc/group (~1 MB)
#   layers 2-6  /data/N/: 4 files of 2 MiB from /dev/urandom, 4 files of 2 MiB of base64
#               text of /dev/urandom (76-column lines), and 512 files of 8 KiB (half random
#               bytes, half base64 text): 20 MiB per layer, ~19.7 MiB of gzip as umoci
#               writes it (random bytes do not shrink, the text barely does). In all about
#               101 MiB of content, ~100 MiB of gzip: gunzip, sha256 and small-file work.
#
# The content is random on every build (so no layer is ever cached by an earlier run).
#
# usage: build-bench-image.sh REGISTRY      e.g. 127.0.0.1:5000
# Run as root; needs umoci, skopeo and busybox-static (scripts/setup.sh installs them).
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 REGISTRY (e.g. 127.0.0.1:5000)" >&2; exit 2; }
registry=$1
for tool in umoci skopeo; do
    command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup.sh" >&2; exit 1; }
done
[[ -x /bin/busybox ]] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }

DATA_LAYERS=${DATA_LAYERS:-5}
work=$(mktemp -d /tmp/nodelet-bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
layout=$work/oci
bundle=$work/bundle

umoci init --layout "$layout"
umoci new --image "$layout:bench"
umoci unpack --image "$layout:bench" "$bundle"
rootfs=$bundle/rootfs

# --- layer 1: busybox --------------------------------------------------------------------
# shellcheck source=busybox-rootfs.sh
source "$(dirname "$0")/busybox-rootfs.sh"
fill_busybox_rootfs "$rootfs"
umoci repack --refresh-bundle --image "$layout:bench" "$bundle"

# --- layers 2..: generated data ------------------------------------------------------------
# $1 bytes of base64 lines; the encoder's SIGPIPE when head has enough is expected.
text() { { head -c "$1" /dev/urandom | base64 -w 76 || true; } | head -c "$1"; }
for n in $(seq 1 "$DATA_LAYERS"); do
    d=$rootfs/data/$n
    mkdir -p "$d/small"
    for f in 1 2 3 4; do
        head -c 2M /dev/urandom >"$d/random-$f.bin"
        text 2M >"$d/text-$f.txt"
    done
    { head -c 2M /dev/urandom; text 2M; } | split -b 8K -a 3 - "$d/small/f"
    umoci repack --refresh-bundle --image "$layout:bench" "$bundle"
done

umoci config --image "$layout:bench" --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd sh --config.workingdir /
umoci gc --layout "$layout"

target=$registry/nodelet/bench:1
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$layout:bench" "docker://$target"
digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$target")
echo "pushed $target $digest"
skopeo inspect --tls-verify=false --raw "docker://$target" |
    jq -r '.layers[] | "  layer \(.digest[7:19])  \(.size / 1048576 * 10 | floor / 10) MiB gzip"'
