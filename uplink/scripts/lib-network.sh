# Shared by the bench scripts: starts N storage-node processes on 127.0.N.1 (node 1 the
# DHT seed, the others joining through it) under $ROOT, and makes uplink config dirs
# whose grant is pinned to the seed. Source it after setting N, ROOT and BIN; it sets SN,
# UP, SEED and PIDS and installs a cleanup trap that stops what it started and removes
# $ROOT.
SN=$BIN/storage-node; UP=$BIN/uplink
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait; rm -rf "$ROOT"; }
trap cleanup EXIT
now() { date +%s.%N; }
start_node() { # index [bootstrap]
  local d=$ROOT/node$1 boot=()
  [ -n "${2:-}" ] && boot=(--bootstrap "$2")
  $SN setup --dir "$d" --difficulty 2 --allocate 20GB --listen "127.0.$1.1:0" --local-network \
    --http "127.0.$1.1:0" "${boot[@]}" > "$d.setup.log" 2>&1 \
    || { echo "setup of node $1 failed"; cat "$d.setup.log"; exit 1; }
  $SN run --dir "$d" > "$d.log" 2>&1 &
  PIDS+=($!)
}
wait_node() {
  for _ in $(seq 1 400); do [ -f "$ROOT/node$1/running.json" ] && return 0; sleep 0.05; done
  echo "node $1 did not start"; cat "$ROOT/node$1.log"; exit 1
}
start_node 1; wait_node 1
# Pinned NODEID@HOST:PORT: every connection is TLS keyed by the node's identity.
SEED_ADDR=$(python3 -c "import json; print(json.load(open('$ROOT/node1/running.json'))['grpc'])")
SEED_ID=$($SN info --dir "$ROOT/node1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])')
SEED="$SEED_ID@$SEED_ADDR"
for i in $(seq 2 "$N"); do start_node "$i" "$SEED"; done
for i in $(seq 2 "$N"); do wait_node "$i"; done

# A config dir with a fresh grant; waits until the DHT has settled enough to store.
new_owner() { # dir [scheme]
  mkdir -p "$1"
  printf 'difficulty = 2\nlocal_network = true\nscheme = "%s"\n' "${2:-3/5/7/10}" > "$1/config.toml"
  $UP --config-dir "$1" access create --bootstrap "$SEED" > "$1/grant.txt" 2>/dev/null || exit 1
  for _ in $(seq 1 100); do
    $UP --config-dir "$1" mb shoal://bench > /dev/null 2>&1 && return 0; sleep 0.2
  done
  echo "cannot make a bucket"; exit 1
}
