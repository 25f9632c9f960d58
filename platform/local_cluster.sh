#!/usr/bin/env bash
# A multi-node Ray cluster on this one machine: a head node and N worker nodes, each its
# own raylet with its own ports, CPUs and temp folder. For trying `--address`, `ray job
# submit` and node failures without a second machine.
#
#   platform/local_cluster.sh start [--workers N] [--cpus C] [--head-cpus C] [--port P] [--state FILE]
#   platform/local_cluster.sh stop  [--port P] [--state FILE]
#
# Options may also come from the environment: TACFN_CLUSTER_WORKERS (default 1),
# TACFN_CLUSTER_CPUS (CPUs per worker node, default 1), TACFN_CLUSTER_HEAD_CPUS (default:
# the same), TACFN_CLUSTER_PORT (the head's GCS port, default 20000; the cluster uses the
# ports P..P+1000+200*(N+1)), TACFN_CLUSTER_STATE (default /tmp/tacfn-cluster-P.state),
# RAY (the ray executable, default: `ray` next to this shell's python, else on PATH).
#
# Worker node k (1..N) carries the custom resource {"node_k": 1}, so work can be pinned to
# it. `start` prints the cluster address and the dashboard URL and records, per node, the
# process group its Ray processes run in; `stop` ends exactly those process groups (SIGTERM,
# then SIGKILL after 10 s), never another Ray on this machine. Token authentication (on by
# default for local clusters since Ray 2.59) is off unless RAY_AUTH_MODE says otherwise:
# drivers and `ray job submit` must run with the same RAY_AUTH_MODE.
set -euo pipefail

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
export RAY_USAGE_STATS_ENABLED=0

workers="${TACFN_CLUSTER_WORKERS:-1}"
cpus="${TACFN_CLUSTER_CPUS:-1}"
head_cpus="${TACFN_CLUSTER_HEAD_CPUS:-}"
port="${TACFN_CLUSTER_PORT:-20000}"
state="${TACFN_CLUSTER_STATE:-}"
ip=127.0.0.1

usage() {
    sed -n '6,7p' "$0" | sed 's/^# *//' >&2
    exit 2
}

ray_bin() {
    if [[ -n "${RAY:-}" ]]; then echo "$RAY"; return; fi
    local here
    here="$(dirname "$(command -v python 2>/dev/null || echo /nonexistent)")"
    if [[ -x "$here/ray" ]]; then echo "$here/ray"; else command -v ray; fi
}

# start_node NAME ARGS...: `ray start` in a new session, so the node's processes share
# one process group; records "NAME PGID" in the state file.
start_node() {
    local name="$1"; shift
    local log="$tmp/$name.log"
    setsid "$(ray_bin)" start --disable-usage-stats --node-ip-address "$ip" "$@" >"$log" 2>&1 &
    local pgid=$!
    echo "$name $pgid" >>"$state"
    if ! wait "$pgid"; then
        echo "local_cluster: $name did not start (log: $log):" >&2
        tail -n 20 "$log" >&2
        stop
        exit 1
    fi
}

# node_ports K: the ports of node K (0 is the head) as `ray start` flags.
node_ports() {
    local k="$1" base=$((port + 10 + 10 * $1)) workers_base=$((port + 1000 + 200 * $1))
    echo --node-manager-port $base --object-manager-port $((base + 1)) \
        --dashboard-agent-listen-port $((base + 2)) --dashboard-agent-grpc-port $((base + 3)) \
        --metrics-export-port $((base + 4)) --runtime-env-agent-port $((base + 5)) \
        --min-worker-port $workers_base --max-worker-port $((workers_base + 199))
}

start() {
    if [[ -s "$state" ]]; then
        echo "local_cluster: $state exists: a cluster on port $port may be running; stop it first" >&2
        exit 1
    fi
    tmp="$(mktemp -d "/tmp/tacfn-cluster-$port-XXXX")"
    echo "tmp $tmp" >"$state"
    # shellcheck disable=SC2046  # node_ports gives several words on purpose
    start_node head --head --port "$port" --num-cpus "${head_cpus:-$cpus}" --temp-dir "$tmp/head" \
        --include-dashboard true --dashboard-host "$ip" --dashboard-port $((port + 1)) \
        --ray-client-server-port $((port + 2)) $(node_ports 0)
    for ((k = 1; k <= workers; k++)); do
        # shellcheck disable=SC2046
        start_node "node_$k" --address "$ip:$port" --num-cpus "$cpus" --resources "{\"node_$k\": 1}" \
            --temp-dir "$tmp/node_$k" $(node_ports "$k")
    done
    echo "address $ip:$port" >>"$state"
    echo "dashboard http://$ip:$((port + 1))" >>"$state"
    echo "Ray cluster: head + $workers worker node(s); state in $state"
    echo "address: $ip:$port"
    echo "dashboard: http://$ip:$((port + 1))"
}

# alive GROUPS...: whether any process of these groups still runs (zombies do not count).
alive() {
    ps -eo pgid=,stat= | awk -v groups=" $* " \
        'index(groups, " " $1 " ") && $2 !~ /^Z/ {found = 1} END {exit !found}'
}

# stop: SIGTERM to every recorded process group, SIGKILL to what is left after 10 s.
stop() {
    [[ -f "$state" ]] || { echo "local_cluster: no cluster recorded in $state" >&2; return 0; }
    local groups tmp_dir
    groups="$(awk '$1 == "head" || $1 ~ /^node_/ {print $2}' "$state")"
    tmp_dir="$(awk '$1 == "tmp" {print $2}' "$state")"
    for g in $groups; do kill -TERM -- "-$g" 2>/dev/null || true; done
    for _ in $(seq 100); do
        alive $groups || break
        sleep 0.1
    done
    for g in $groups; do kill -KILL -- "-$g" 2>/dev/null || true; done
    rm -f "$state"
    [[ -n "$tmp_dir" && "$tmp_dir" == /tmp/tacfn-cluster-* ]] && rm -rf "$tmp_dir"
    echo "Ray cluster on port $port stopped"
}

command="${1:-}"
[[ -n "$command" ]] || usage
shift
while (($#)); do
    case "$1" in
        --workers) workers="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        --head-cpus) head_cpus="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --state) state="$2"; shift 2 ;;
        *) usage ;;
    esac
done
state="${state:-/tmp/tacfn-cluster-$port.state}"
case "$command" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
