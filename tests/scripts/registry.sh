#!/usr/bin/env bash
# A throwaway OCI registry on loopback for tests and demos, using Debian's docker-registry
# (not its systemd service).
#
#   registry.sh start DIR PORT   config, storage, log and pid file in DIR; 127.0.0.1:PORT
#   registry.sh stop DIR         stops the registry whose pid is in DIR/registry.pid
#
# HTTPS: when DIR/tls/server.crt and DIR/tls/server.key exist, the registry serves TLS with
# them; with DIR/tls/client-ca.crt too it also requires a client certificate signed by that
# CA (then DIR/tls/client.cert and client.key are what the readiness check presents).
#
# Idempotent: start with a registry already answering from DIR is a no-op; stop without one
# is a no-op. Run as root (installs the package when missing).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
}

# True when the pid in $1 is alive and is a docker-registry (guards against pid reuse).
is_our_registry() {
    local pid=$1
    [[ -n "$pid" && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'docker-registry'
}

# HTTP GET /v2/ answers (200 or 401) on 127.0.0.1:$1 (HTTPS when DIR $2 has tls/).
answers() {
    local port=$1 dir=${2:-} status
    if [[ -n "$dir" && -f "$dir/tls/server.crt" ]]; then
        local client=()
        [[ -f "$dir/tls/client.cert" ]] && client=(--cert "$dir/tls/client.cert" --key "$dir/tls/client.key")
        status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$dir/tls/ca.crt" "${client[@]}" \
            "https://127.0.0.1:$port/v2/" || true)
    elif command -v curl >/dev/null; then
        status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/v2/" || true)
    else
        status=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" &&
            printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
            head -n1 <&3 | cut -d' ' -f2) 2>/dev/null || true)
    fi
    [[ "$status" == 200 || "$status" == 401 ]]
}

start() {
    local dir=$1 port=$2
    [[ "$port" =~ ^[0-9]+$ ]] || usage
    if ! command -v docker-registry >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
    fi
    mkdir -p "$dir/storage"
    dir=$(cd "$dir" && pwd)
    local pidfile=$dir/registry.pid
    if [[ -f "$pidfile" ]] && is_our_registry "$(cat "$pidfile")" && answers "$port" "$dir"; then
        echo "registry already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
        return 0
    fi
    cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: nodelet-test-registry
YAML
    if [[ -f "$dir/tls/server.crt" ]]; then
        printf '  tls:\n    certificate: %s\n    key: %s\n' "$dir/tls/server.crt" "$dir/tls/server.key" >>"$dir/config.yml"
        if [[ -f "$dir/tls/client-ca.crt" ]]; then
            printf '    clientcas:\n      - %s\n' "$dir/tls/client-ca.crt" >>"$dir/config.yml"
        fi
    fi
    # setsid: not in the caller's process group, so a Ctrl-C of the caller does not leave
    # a half-killed registry; stop kills it by pid.
    setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 150); do
        if answers "$port" "$dir"; then
            echo "registry running on 127.0.0.1:$port (pid $pid, storage $dir/storage)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "registry exited; log:" >&2
            cat "$dir/registry.log" >&2
            rm -f "$pidfile"
            return 1
        fi
        sleep 0.2
    done
    echo "registry did not answer on 127.0.0.1:$port within 30s; log:" >&2
    cat "$dir/registry.log" >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    return 1
}

stop() {
    local dir=$1
    local pidfile=$dir/registry.pid
    [[ -f "$pidfile" ]] || return 0
    local pid
    pid=$(cat "$pidfile")
    if is_our_registry "$pid"; then
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        echo "registry (pid $pid) stopped"
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
*) usage ;;
esac
