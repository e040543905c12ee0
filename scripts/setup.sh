#!/usr/bin/env bash
# Installs what nodelet's build, demo and tests need on a fresh Debian 12 machine with Rust.
# Idempotent: installs only what is missing. Run as root.
set -euo pipefail

packages=(
  clang-19 llvm-19 libbpf-dev bpftool   # BPF C programs (ebpf/build.rs)
  docker-registry skopeo umoci          # a local OCI registry and tools to build test images
  busybox-static                        # small root filesystems for test images
  libseccomp-dev                        # seccomp filters of containers (the libseccomp crate links it)
  runc                                  # reference runtime for comparisons
  iproute2 iptables ipvsadm conntrack   # checks in tests, reference datapaths in benchmarks
  iperf3 wrk containernetworking-plugins
  util-linux procps curl jq openssl ca-certificates
  python3 perl                          # test peers (echo servers and clients in netns), bench parsing
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# kubectl may come from another package (e.g. a cloud SDK); only install Debian's when absent.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust components the test command uses.
for component in clippy rustfmt; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
echo "setup: ok"
