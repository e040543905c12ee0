#!/usr/bin/env bash
# Build nodelet's test images from Debian's busybox-static and push them to a (loopback,
# plain-HTTP) registry:
#
#   REGISTRY/nodelet/busybox:1  one layer: busybox + applet symlinks in /bin, /etc/passwd,
#                               /etc/motd, /tmp. Pushed as a Docker schema 2 manifest.
#   REGISTRY/nodelet/web:1      the busybox layer + a layer adding /www/index.html
#                               ("hello from nodelet") and deleting /etc/motd (a whiteout);
#                               Cmd httpd -f -p 8080 -h /www, ExposedPorts 8080/tcp. OCI manifest.
#
# usage: build-test-images.sh REGISTRY      e.g. 127.0.0.1:5000
# Idempotent (rebuilds and re-pushes the tags). Run as root; installs umoci, skopeo and
# busybox-static when missing.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 REGISTRY (e.g. 127.0.0.1:5000)" >&2; exit 2; }
registry=$1

need=()
command -v umoci >/dev/null || need+=(umoci)
command -v skopeo >/dev/null || need+=(skopeo)
# ldd exits 1 on a static binary: keep its status out of the pipeline (pipefail).
[[ -x /bin/busybox ]] && /bin/busybox --list >/dev/null 2>&1 && { ldd /bin/busybox 2>&1 || true; } | grep -q 'not a dynamic' || need+=(busybox-static)
if [[ ${#need[@]} -gt 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/nodelet-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
layout=$work/oci

# Fixed mtimes make the layers' tar streams (diff ids) the same on every run.
normalize_times() {
    find "$1" -exec touch -h -d @1700000000 {} +
}

umoci init --layout "$layout"
# shellcheck source=busybox-rootfs.sh
source "$(dirname "$0")/busybox-rootfs.sh"

# --- busybox -------------------------------------------------------------------------
umoci new --image "$layout:busybox"
umoci unpack --image "$layout:busybox" "$work/busybox"
rootfs=$work/busybox/rootfs
fill_busybox_rootfs "$rootfs"
echo "this file is deleted by the web image's layer" >"$rootfs/etc/motd"
normalize_times "$rootfs"
umoci repack --image "$layout:busybox" "$work/busybox"
umoci config --image "$layout:busybox" --os linux --architecture amd64 \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd sh --config.workingdir /

# --- web: a second layer on top of busybox's ------------------------------------------
umoci unpack --image "$layout:busybox" "$work/web"
rootfs=$work/web/rootfs
mkdir -p "$rootfs/www"
echo "hello from nodelet" >"$rootfs/www/index.html"
rm "$rootfs/etc/motd"
normalize_times "$rootfs"
umoci repack --image "$layout:web" "$work/web"
umoci config --image "$layout:web" \
    --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 8080 \
    --config.cmd -h --config.cmd /www \
    --config.exposedports 8080/tcp
umoci gc --layout "$layout"

push() {
    local tag=$1 target=$2
    shift 2
    skopeo --insecure-policy copy -q --dest-tls-verify=false "$@" \
        "oci:$layout:$tag" "docker://$target"
    local digest
    digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$target")
    echo "pushed $target $digest"
}
push busybox "$registry/nodelet/busybox:1" --format v2s2
push web "$registry/nodelet/web:1"
