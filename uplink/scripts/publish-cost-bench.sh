#!/bin/bash
# Catalog publish cost (issue 25, "cheap publishes"): N storage-node processes on
# 127.0.N.1 (see lib-network.sh) and the `uplink` CLI. Per catalog size and variant: a
# fresh owner, a catalog of SIZE objects of 100 B built with one `cp -r` (one publish),
# then PUBLISHES runs of `uplink cp` of one new 100 B object each (one publish each,
# snapshots included as they fall due). Prints, per case, the bytes the catalog publishes
# sent (`bytes_sent` of every `catalog published` log line: blob pieces plus every DHT
# copy of the records) summed over the PUBLISHES runs and divided by them, with how many
# of them carried a snapshot and what the snapshots' share was.
#
# Variants, in one run on the same binaries:
#   before  inline_head = 0, catalog_fit_scheme = false (every delta a blob of the
#           catalog scheme: the code before issue 25's cheap publishes)
#   after   the defaults (small deltas inline in the head record, small blobs fitted)
#
#   uplink/scripts/publish-cost-bench.sh [NODES] [PUBLISHES] [SIZES...]
#   uplink/scripts/publish-cost-bench.sh 20 1000 10000 100000
#
# BIN defaults to target/release; bytes do not depend on the build profile, so
# BIN=$CARGO_TARGET_DIR/debug works too (slower).
set -u
N=${1:-20}; shift || true
P=${1:-1000}; shift || true
SIZES=${*:-10000}
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
VARIANTS=${VARIANTS:-before after}
ROOT=$(mktemp -d /tmp/shoal-publish-bench.XXXXXX)
. "$(dirname "$0")/lib-network.sh"

tree() { # dir count size
  python3 - "$@" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    sub = os.path.join(d, f"d{i % 100:02}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:07}"), "wb") as f:
        f.write(os.urandom(size))
PY
}

echo "# $(date -u +%FT%TZ) nodes=$N publishes=$P load: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $SIZES; do
  for v in $VARIANTS; do
    A=$ROOT/owner-$n-$v; new_owner "$A"
    if [ "$v" = before ]; then
      printf 'inline_head = 0\ncatalog_fit_scheme = false\n' >> "$A/config.toml"
    fi
    tree "$ROOT/small-$n" "$n" 100
    $UP --config-dir "$A" cp -r --no-progress "$ROOT/small-$n" shoal://bench/many > /dev/null || exit 1
    rm -rf "$ROOT/small-$n"
    LOG=$ROOT/publishes-$n-$v.log; : > "$LOG"
    t0=$(now)
    for i in $(seq 1 "$P"); do
      head -c 100 /dev/urandom > "$ROOT/one"
      RUST_LOG=uplink::sync=info $UP --config-dir "$A" cp --no-progress "$ROOT/one" \
        "shoal://bench/new/o$i" 2> "$ROOT/one.log" > /dev/null || { cat "$ROOT/one.log"; exit 1; }
      sed 's/\x1b\[[0-9;]*m//g' "$ROOT/one.log" | grep 'catalog published' >> "$LOG"
    done
    t1=$(now)
    python3 - "$LOG" "$N" "$n" "$v" "$P" "$t0" "$t1" <<'PY'
import re, sys
log, nodes, size, variant, p, t0, t1 = sys.argv[1:]
total = snap = snaps = pubs = 0
each = []
for line in open(log):
    m = re.search(r"bytes_sent=(\d+)", line)
    if not m:
        continue
    b = int(m.group(1)); pubs += 1; total += b; each.append(b)
    if re.search(r"snapshot=true", line):
        snaps += 1; snap += b
p = int(p)
print(f"publish-cost nodes={nodes} catalog={size} variant={variant} publishes={pubs}/{p} "
      f"bytes_per_publish={total / max(pubs, 1):.0f} "
      f"without_snapshots={(total - snap) / max(pubs - snaps, 1):.0f} "
      f"snapshots={snaps} snapshot_share={snap / max(total, 1):.2f} "
      f"s_per_publish={(float(t1) - float(t0)) / max(p, 1):.2f} "
      f"first={','.join(map(str, each[:12]))}")
PY
  done
done
