#!/usr/bin/env bash
# Three sentinels agreeing through etcd, on one machine (docs/cluster.md: "Running several
# sentinels"). Starts one etcd (data in a temporary directory), three HTTP backends and
# three `sentinel run` members of examples/cluster/sentinel.yaml, then walks through:
#   1. the cluster as `sentinel status` shows it (leader, members, who probes what);
#   2. backend web2 killed: down on all three members at one seq, the same Maglev table;
#   3. web3 drained through lb2: drained on all three;
#   4. the leader killed with SIGKILL: another member leads within lease_ttl.
# Then it stops everything it started (by PID) and exits 0; with --keep it leaves the
# cluster running until Ctrl-C.
#
# Needs etcd (Debian: etcd-server) and sentinel on PATH (or SENTINEL="python -m sentinel").
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
sentinel=(${SENTINEL:-sentinel})
keep=${1:-}
work="$(mktemp -d -t sentinel-cluster-XXXXXX)"
pids=()

stop() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $what" >&2; exit 1; fi
        sleep 0.2
    done
}

state_of() {  # state_of MEMBER BACKEND: the backend's state in the member's file sink
    python3 - "$work/$1/view.json" "$2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
print(next(b["state"] for b in doc["services"]["web"]["backends"] if b["name"] == sys.argv[2]))
PY
}

all_show() {  # all_show BACKEND STATE: every live member's file sink says so
    local m
    for m in "${members[@]}"; do [ "$(state_of "$m" "$1")" = "$2" ] || return 1; done
}

cluster_field() {  # cluster_field MEMBER FIELD: a field of /v1/state's cluster object
    python3 - "${api[$1]}" "$2" <<'PY'
import json, sys, urllib.request
doc = json.load(urllib.request.urlopen(sys.argv[1] + "/v1/state", timeout=5))
print(doc["cluster"][sys.argv[2]])
PY
}

joined() {  # joined MEMBER: it is ok, sees three members and every backend up
    python3 -c '
import json, sys, urllib.request
doc = json.load(urllib.request.urlopen(sys.argv[1] + "/v1/state", timeout=5))
assert doc["cluster"]["ok"] and len(doc["cluster"]["members"]) == 3
assert all(b["state"] == "up" for b in doc["services"]["web"]["backends"])
' "${api[$1]}"
}

led_by_other() {  # led_by_other MEMBER OLD: MEMBER names a leader other than OLD
    local now
    now=$(cluster_field "$1" leader) && [ "$now" != "$2" ] && [ "$now" != None ]
}

# -- etcd: one member, loopback, its own data dir ------------------------------------
etcd_port=$(free_port); peer_port=$(free_port)
export ETCD="http://127.0.0.1:$etcd_port"
etcd --name example --data-dir "$work/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "example=http://127.0.0.1:$peer_port" >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_for 30 "etcd" python3 -c "import urllib.request; urllib.request.urlopen('$ETCD/health')"
echo "etcd: $ETCD"

# -- three backends ------------------------------------------------------------------
declare -A backend
for n in 1 2 3; do
    port=$(free_port)
    export "WEB${n}_PORT=$port"
    mkdir -p "$work/web$n"
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/web$n" \
        >"$work/web$n.log" 2>&1 &
    backend[web$n]=$!
    pids+=($!)
done

# -- three sentinels from one configuration ----------------------------------------------
members=(lb1 lb2 lb3)
declare -A api member_pid
for m in "${members[@]}"; do
    api[$m]="http://127.0.0.1:$(free_port)"
    mkdir -p "$work/$m"
    SENTINEL_NODE=$m SENTINEL_STATE="$work/$m" SENTINEL_API="${api[$m]#http://}" \
        "${sentinel[@]}" run -c "$here/sentinel.yaml" >"$work/$m.log" 2>&1 &
    member_pid[$m]=$!
    pids+=($!)
done
for m in "${members[@]}"; do
    wait_for 30 "$m to join" joined "$m"
done
echo; echo "== 1. the cluster, as lb1 sees it"
"${sentinel[@]}" status --api "${api[lb1]}"

echo; echo "== 2. web2 killed"
kill "${backend[web2]}"
wait_for 15 "web2 down on all three" all_show web2 down
for m in "${members[@]}"; do
    python3 - "$m" "$work/$m" <<'PY'
import hashlib, json, sys
view = json.load(open(f"{sys.argv[2]}/view.json"))
table = open(f"{sys.argv[2]}/maglev/web.maglev", "rb").read()
print(f"{sys.argv[1]}: web2 {next(b['state'] for b in view['services']['web']['backends'] if b['name'] == 'web2')}"
      f" at seq {view['seq']}; Maglev table sha256 {hashlib.sha256(table).hexdigest()[:16]}")
PY
done

echo; echo "== 3. web3 drained through lb2"
"${sentinel[@]}" ctl drain web/web3 --api "${api[lb2]}"
wait_for 15 "web3 drained on all three" all_show web3 drain
for m in "${members[@]}"; do echo "$m: web3 $(state_of "$m" web3)"; done

echo; echo "== 4. the leader killed with SIGKILL"
leader=$(cluster_field lb1 leader)
kill -9 "${member_pid[$leader]}"
wait "${member_pid[$leader]}" 2>/dev/null || true
members=("${members[@]/$leader}")
members=(${members[@]})
echo "killed $leader; waiting for a new leader (lease_ttl 3s)"
wait_for 15 "a new leader" led_by_other "${members[0]}" "$leader"
echo "new leader: $(cluster_field "${members[0]}" leader)"
"${sentinel[@]}" status --api "${api[${members[0]}]}"
echo; echo "the leader's exec sink (scope: leader) said:"
grep -h "\[leader\]" "$work"/lb*.log || true

if [ "$keep" = "--keep" ]; then
    echo; echo "running; Ctrl-C stops everything (work dir $work)"
    wait
fi
