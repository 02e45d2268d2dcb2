#!/bin/bash
# S3 gateway benchmarks (issue 11): N storage-node processes on 127.0.N.1 found through
# the DHT, the release `uplink` CLI and `uplink gateway` on the same network and access.
# Prints one line per case:
#   - a SIZE_MIB object up and down with `uplink cp`, then through the gateway (curl on a
#     presigned URL: the thinnest S3 client, UNSIGNED-PAYLOAD) and the ratio;
#   - the gateway's peak RSS over those transfers;
#   - PUTs of 4 KiB objects per second at 1 and 16 concurrent boto3 clients, each PUT
#     acknowledged durable (catalog change published; concurrent PUTs share publishes).
# Every download is compared with its source outside the timing.
#
#   uplink/scripts/gateway-bench.sh [NODES] [SIZE_MIB] [SMALL_PUTS_PER_CLIENT]
#   uplink/scripts/gateway-bench.sh 20 1024 200
#
# Needs target/release/storage-node and target/release/uplink (cargo build --release;
# BIN=DIR runs the binaries in DIR instead),
# curl, and python3 with boto3.
set -u
N=${1:-20}
SIZE_MIB=${2:-1024}
SMALL=${3:-200}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$REPO/target/release}  # another build for an A/B: BIN=DIR script ...
ROOT=$(mktemp -d /tmp/shoal-gateway-bench.XXXXXX)
. "$(dirname "$0")/lib-network.sh"
rate() { python3 -c "print(f'{$1 / ($3 - $2) / 1e6:.0f}')"; }

echo "# $(date -u +%FT%TZ) nodes=$N size=${SIZE_MIB}MiB load: $(cut -d' ' -f1-3 /proc/loadavg)"
A=$ROOT/owner; new_owner "$A"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$ROOT/big"
BYTES=$((SIZE_MIB * 1024 * 1024))

t0=$(now); $UP --config-dir "$A" cp --no-progress "$ROOT/big" shoal://bench/cli.bin || exit 1; t1=$(now)
t2=$(now); $UP --config-dir "$A" cp --no-progress shoal://bench/cli.bin "$ROOT/back-cli" || exit 1; t3=$(now)
cmp "$ROOT/big" "$ROOT/back-cli" || { echo "uplink cp download differs"; exit 1; }
rm -f "$ROOT/back-cli"
CLI_UP=$(rate $BYTES "$t0" "$t1"); CLI_DOWN=$(rate $BYTES "$t2" "$t3")
echo "gateway-bench case=uplink-cp size=${SIZE_MIB}MiB up_MBps=$CLI_UP down_MBps=$CLI_DOWN"

AK=SHOALBENCH SK=bench-secret-key-0123456789
$UP --config-dir "$A" gateway --listen 127.0.0.1:0 --access-key $AK --secret-key $SK \
  > "$ROOT/gateway.out" 2> "$ROOT/gateway.err" &
GW=$!; PIDS+=($GW)
for _ in $(seq 1 600); do grep -q "on http://" "$ROOT/gateway.out" 2>/dev/null && break; sleep 0.1; done
EP=$(sed -n 's/.*on \(http:\/\/[0-9.:]*\).*/\1/p' "$ROOT/gateway.out" | head -1)
[ -n "$EP" ] || { echo "the gateway did not start"; cat "$ROOT/gateway.err"; exit 1; }
presign() { # method key
  python3 - "$EP" "$AK" "$SK" "$1" "$2" <<'PY'
import sys, boto3
from botocore.config import Config
ep, ak, sk, method, key = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=ak, aws_secret_access_key=sk,
                  region_name="us-east-1", config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
print(s3.generate_presigned_url(method, Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600))
PY
}
PUT_URL=$(presign put_object gw.bin); GET_URL=$(presign get_object gw.bin)
t0=$(now); curl -sS --fail -T "$ROOT/big" "$PUT_URL" -o /dev/null || exit 1; t1=$(now)
t2=$(now); curl -sS --fail "$GET_URL" -o "$ROOT/back-gw" || exit 1; t3=$(now)
cmp "$ROOT/big" "$ROOT/back-gw" || { echo "gateway download differs"; exit 1; }
rm -f "$ROOT/back-gw"
GW_UP=$(rate $BYTES "$t0" "$t1"); GW_DOWN=$(rate $BYTES "$t2" "$t3")
RSS=$(awk '/VmHWM/ {print $2}' /proc/$GW/status)
python3 -c "print(f'gateway-bench case=gateway-curl size=${SIZE_MIB}MiB up_MBps=$GW_UP down_MBps=$GW_DOWN up_ratio={$GW_UP/$CLI_UP:.2f} down_ratio={$GW_DOWN/$CLI_DOWN:.2f} gateway_peak_rss_MiB={$RSS/1024:.0f}')"

for c in 1 16; do
  python3 "$REPO/tests/s3/small_puts.py" "$EP" $AK $SK bench "$c" $((SMALL / (c > 1 ? 4 : 1))) 4096 || exit 1
done
echo "# done load: $(cut -d' ' -f1-3 /proc/loadavg)"
