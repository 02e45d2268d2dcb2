#!/bin/bash
# Catalog benchmarks (issue 10): N storage-node processes on 127.0.N.1 (node 1 the DHT
# seed, the others joining through it) and the release `uplink` CLI, which finds the nodes
# and the catalog's records through the DHT as a user's would. Prints one line per case:
#   - cp -r of 1,000 files of 4 KiB (inline) and 4 KiB + 1 (pieces on nodes), files/s,
#     publish included;
#   - per catalog size: bytes the publish of one new object sent (from the CLI's
#     `catalog published` log line), and the time `access import` takes to recover the
#     whole catalog into an empty config dir (checked: every object listed).
#
#   uplink/scripts/catalog-bench.sh [NODES] [CATALOG SIZES...]
#   uplink/scripts/catalog-bench.sh 20 1000 10000 100000
#
# Needs target/release/storage-node and target/release/uplink (cargo build --release).
set -u
N=${1:-20}; shift || true
SIZES=${*:-1000 10000}
BIN=$(cd "$(dirname "$0")/../.." && pwd)/target/release
ROOT=$(mktemp -d /tmp/shoal-catalog-bench.XXXXXX)
. "$(dirname "$0")/lib-network.sh"

tree() { # dir count size
  python3 - "$@" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    sub = os.path.join(d, f"d{i % 100:02}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:06}"), "wb") as f:
        f.write(os.urandom(size))
PY
}

echo "# $(date -u +%FT%TZ) nodes=$N load: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in 4096 4097; do
  A=$ROOT/cp-$size; new_owner "$A"; tree "$ROOT/files-$size" 1000 "$size"
  t0=$(now)
  $UP --config-dir "$A" cp -r --no-progress "$ROOT/files-$size" shoal://bench/t || exit 1
  t1=$(now)
  python3 -c "print(f'catalog-bench nodes=$N case=cp-r files=1000 size=$size files_per_s={1000/($t1-$t0):.0f} (publish included)')"
  rm -rf "$ROOT/files-$size"
done

for n in $SIZES; do
  A=$ROOT/owner-$n; new_owner "$A"; tree "$ROOT/small-$n" "$n" 100
  t0=$(now)
  $UP --config-dir "$A" cp -r --no-progress "$ROOT/small-$n" shoal://bench/many || exit 1
  t1=$(now)
  rm -rf "$ROOT/small-$n"
  echo one > "$ROOT/one"
  RUST_LOG=uplink::sync=info $UP --config-dir "$A" cp --no-progress "$ROOT/one" shoal://bench/one \
    2> "$ROOT/one.log" || { cat "$ROOT/one.log"; exit 1; }
  bytes=$(sed 's/\x1b\[[0-9;]*m//g' "$ROOT/one.log" | sed -n 's/.*bytes_sent=\([0-9]*\).*/\1/p' | tail -1)
  B=$ROOT/recovered-$n; mkdir -p "$B"; cp "$A/config.toml" "$B/"
  t2=$(now)
  out=$($UP --config-dir "$B" access import "$(cat "$A/grant.txt")") || exit 1
  t3=$(now)
  echo "$out" | grep -q "1 buckets, $((n + 1)) objects" || { echo "recovery incomplete: $out"; exit 1; }
  python3 -c "print(f'catalog-bench nodes=$N catalog={$n+1} build_files_per_s={$n/($t1-$t0):.0f} publish_one_object_bytes=$bytes recover_s={$t3-$t2:.2f} recovered=all')"
done
