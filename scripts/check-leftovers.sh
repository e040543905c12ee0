#!/usr/bin/env bash
# Fails when nodelet's tests left host objects behind: a leak in a test is a leak on a node.
# Looks only at objects nodelet names (prefixes nodelet, nlt, nlb); changes nothing.
set -uo pipefail
found=0
report() { echo "leftover: $*"; found=1; }

# Mount point is field 5; the filesystem type follows the " - " separator.
while IFS= read -r line; do
  mnt=$(echo "$line" | cut -d' ' -f5)
  fstype=${line#* - }; fstype=${fstype%% *}
  case "$mnt" in *nodelet*) report "mount $mnt ($fstype)"; continue ;; esac
  case "$fstype" in overlay|nsfs) report "mount $mnt ($fstype)" ;; esac
done < /proc/self/mountinfo

for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  case "$link" in nlt*|nlb*|nodelet*) report "interface $link" ;; esac
done

for netns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  case "$netns" in nlb-*|nle-*|nlt-*|nodelet*) report "network namespace $netns" ;; esac
done

while IFS= read -r dir; do report "cgroup $dir"; done < <(
  find /sys/fs/cgroup -maxdepth 3 -type d -name 'nodelet-test*' -o -maxdepth 3 -type d -name 'nodelet-e2e*' 2>/dev/null)

# Processes by executable and subcommand (not by substring: a `cargo build --bin nodelet-…`
# is not a leftover).
for cmdline in /proc/[0-9]*/cmdline; do
  mapfile -d '' -t argv < "$cmdline" 2>/dev/null || continue
  ((${#argv[@]})) || continue
  pid=${cmdline#/proc/}; pid=${pid%/cmdline}
  case "$(basename -- "${argv[0]}") ${argv[1]:-}" in
    "nodelet monitor"|"nodelet agent"|"nodelet run"|"nodelet proxy"|nodelet-monitor\ *|nodelet-test-apiserver\ *)
      report "process $pid: ${argv[*]}" ;;
  esac
  # An exec helper names the container it serves in its argv[0].
  case "${argv[0]}" in nodelet-exec-helper:*) report "process $pid: ${argv[*]}" ;; esac
done

if [ "$found" = 0 ]; then echo "no leftovers"; fi
exit "$found"
