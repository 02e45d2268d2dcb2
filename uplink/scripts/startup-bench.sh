#!/bin/bash
# Start-up cost of a CLI command (issue 26, "start-up"): N storage-node processes on
# 127.0.N.1 (see lib-network.sh) and the `uplink` CLI, a catalog of a few objects. Times,
# each RUNS times (median and p90 printed), commands that find nothing new to pull:
#   ls        `uplink ls shoal://bench`
#   cp-up     `uplink cp` of one new 4 KiB file (one publish)
#   cp-down   `uplink cp` of that object back to a local file
# After each round a second config dir of the same grant (another machine of the same
# owner) must list the object the first just wrote.
#
#   uplink/scripts/startup-bench.sh [NODES] [RUNS]
#   uplink/scripts/startup-bench.sh 20 20
#
# BIN (default target/release) holds storage-node and uplink. UPLINKS="name=DIR ..."
# compares uplink binaries on the same nodes in one run, round by round (each with a
# config dir of its own); default "current=$BIN". "name=DIR@MS" runs that uplink with
# SHOAL_BENCH_RTT_MS=MS: a round trip of MS ms added to every connection it dials (only
# a build with `--features uplink-cli/bench-rtt` honours it; see shoal_proto::rtt):
#   cargo build --release --bin uplink --features uplink-cli/bench-rtt
#   mkdir -p /work/rtt-bin && cp target/release/uplink /work/rtt-bin/
#   UPLINKS="rtt0=/work/rtt-bin rtt40=/work/rtt-bin@40" uplink/scripts/startup-bench.sh 20 10
# The sequential round trips of a command are then (its time at 40 - at 0) / 40 ms.
set -u
N=${1:-20}; RUNS=${2:-20}
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
UPLINKS=${UPLINKS:-current=$BIN}
ROOT=$(mktemp -d /tmp/shoal-startup-bench.XXXXXX)
. "$(dirname "$0")/lib-network.sh"

echo "# $(date -u +%FT%TZ) nodes=$N runs=$RUNS load: $(cut -d' ' -f1-3 /proc/loadavg)"
head -c 4096 /dev/urandom > "$ROOT/four"
# name=DIR[@MS] -> $name, $up (the binary), $rtt (ms, empty: none)
variant() {
  name=${1%%=*}; local rest=${1#*=}; up=${rest%@*}/uplink; rtt=
  [ "$rest" != "${rest%@*}" ] && rtt=${rest##*@}
  export SHOAL_BENCH_RTT_MS=$rtt
}
for v in $UPLINKS; do
  variant "$v"
  A=$ROOT/$name; UP=$up new_owner "$A"
  $up --config-dir "$A" cp --no-progress "$ROOT/four" shoal://bench/seed > /dev/null || exit 1
  # A second machine of the same owner: the same grant in another config dir.
  B=$ROOT/$name-other; mkdir -p "$B"; cp "$A/config.toml" "$B/"
  $up --config-dir "$B" access import --grant-file "$A/grant.txt" > /dev/null 2>&1 \
    || { echo "cannot import the grant"; exit 1; }
  $up --config-dir "$B" ls shoal://bench > /dev/null || { echo "second config dir cannot list"; exit 1; }
done

times=()
timed() { # name command...
  local name=$1; shift
  local t0 t1
  t0=$(now); "$@" > /dev/null 2> "$ROOT/err" || { echo "$name failed:"; cat "$ROOT/err"; exit 1; }; t1=$(now)
  times+=("$name $(python3 -c "print(($t1 - $t0) * 1000)")")
}
for i in $(seq 1 "$RUNS"); do
  for v in $UPLINKS; do
    variant "$v"; A=$ROOT/$name; B=$ROOT/$name-other
    timed "$name ls" "$up" --config-dir "$A" ls shoal://bench
    head -c 4096 /dev/urandom > "$ROOT/up$i"
    timed "$name cp-up" "$up" --config-dir "$A" cp --no-progress "$ROOT/up$i" "shoal://bench/o$i"
    timed "$name cp-down" "$up" --config-dir "$A" cp --no-progress "shoal://bench/o$i" "$ROOT/down$i"
    cmp -s "$ROOT/up$i" "$ROOT/down$i" || { echo "o$i read back wrong"; exit 1; }
    # The other machine sees what the first published before it started.
    "$up" --config-dir "$B" ls shoal://bench > "$ROOT/other.ls" 2> "$ROOT/err" || { cat "$ROOT/err"; exit 1; }
    grep -q "o$i\$" "$ROOT/other.ls" || { echo "the other config dir does not list o$i"; cat "$ROOT/other.ls"; exit 1; }
  done
done
printf '%s\n' "${times[@]}" | python3 -c '
import sys, statistics
by = {}
for line in sys.stdin:
    name, cmd, ms = line.split()
    by.setdefault((name, cmd), []).append(float(ms))
for (name, cmd), v in by.items():
    v.sort()
    p90 = v[min(len(v) - 1, int(len(v) * 0.9))]
    print(f"startup nodes='"$N"' uplink={name} {cmd}: median_ms={statistics.median(v):.0f} p90_ms={p90:.0f} runs={len(v)}")
'
