#!/bin/bash
# Runs the uplink CLI against N real storage nodes on 127.0.N.1 (one /24 each), then stops
# them by PID. A manual check and a throughput measurement until the lead's harness in
# tests/ covers the uplink; the uplink crate itself never depends on storage-node.
#
#   uplink/scripts/real-nodes.sh [NODES] [SCHEME] [MIB] [PROFILE]
#   uplink/scripts/real-nodes.sh 20 3/5/7/10 256 release
#
# Needs target/$PROFILE/storage-node and target/$PROFILE/uplink built first.
set -u
N=${1:-12}; SCHEME=${2:-3/5/7/10}; MIB=${3:-16}; PROFILE=${4:-debug}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/$PROFILE
SN=$BIN/storage-node; UP=$BIN/uplink
ROOT=$(mktemp -d /tmp/shoal-real-nodes.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait; rm -rf "$ROOT"; }
trap cleanup EXIT
for i in $(seq 1 "$N"); do
  d=$ROOT/node$i
  $SN setup --dir "$d" --difficulty 2 --allocate 20GB --listen "127.0.$i.1:0" --local-network --http "127.0.$i.1:0" > "$d.setup.log" 2>&1 \
    || { echo "setup of node $i failed"; cat "$d.setup.log"; exit 1; }
  $SN run --dir "$d" > "$d.log" 2>&1 &
  PIDS+=($!)
done
NODES=""
for i in $(seq 1 "$N"); do
  d=$ROOT/node$i
  for _ in $(seq 1 200); do [ -f "$d/running.json" ] && break; sleep 0.05; done
  id=$($SN info --dir "$d" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
  addr=$(python3 -c "import json; print(json.load(open('$d/running.json'))['grpc'])")
  NODES="$NODES\"$id@$addr\","
done
export SHOAL_CONFIG_DIR=$ROOT/uplink; mkdir -p "$SHOAL_CONFIG_DIR"
printf 'nodes = [%s]\nlocal_network = true\nscheme = "%s"\n' "${NODES%,}" "$SCHEME" > "$SHOAL_CONFIG_DIR/config.toml"
$UP access create > /dev/null && $UP mb shoal://bench
head -c $((MIB << 20)) /dev/urandom > "$ROOT/object"
t0=$(date +%s.%N); $UP cp --no-progress "$ROOT/object" shoal://bench/object || exit 1; t1=$(date +%s.%N)
$UP cp --no-progress shoal://bench/object "$ROOT/back" || exit 1; t2=$(date +%s.%N)
cmp "$ROOT/object" "$ROOT/back" || { echo "MISMATCH"; exit 1; }
python3 -c "b=$MIB*1048576/1e6; print(f'real-nodes nodes=$N scheme=$SCHEME size_mib=$MIB up_mb_s={b/($t1-$t0):.0f} down_mb_s={b/($t2-$t1):.0f} identical=yes')"
