#!/bin/bash
# Runs Ceph's s3-tests (https://github.com/ceph/s3-tests, the widely used third-party S3
# conformance suite) against `uplink gateway` on N storage-node processes. Not part of
# CI (the suite is fetched from GitHub, which CI machines cannot reach); a developer
# tool:
#
#   tests/s3/s3-tests.sh PATH-TO-S3-TESTS-CHECKOUT [NODES] [PYTEST ARGS...]
#   tests/s3/s3-tests.sh ~/s3-tests 12 -k "list or multipart or copy or head or range"
#
# Needs target/release/{storage-node,uplink} and the suite's Python requirements
# (pip install -r requirements.txt). The suite's "alt" and "tenant" users get the same
# credentials as "main": the gateway serves one access, so tests that need two distinct
# users fail by design. Prints pytest's summary.
set -u
SUITE=$(cd "$1" && pwd); shift
N=${1:-12}; shift || true
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$REPO/target/release
ROOT=$(mktemp -d /tmp/shoal-s3-tests.XXXXXX)
. "$REPO/uplink/scripts/lib-network.sh"
A=$ROOT/owner; new_owner "$A" "3/5/7/10"
$UP --config-dir "$A" rb shoal://bench > /dev/null || exit 1   # the suite wants no buckets
AK=SHOALS3TESTS SK=s3-tests-secret-key-0123456789
$UP --config-dir "$A" gateway --listen 127.0.0.1:0 --access-key $AK --secret-key $SK \
  > "$ROOT/gateway.out" 2> "$ROOT/gateway.err" &
PIDS+=($!)
for _ in $(seq 1 600); do grep -q "on http://" "$ROOT/gateway.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/.*on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$ROOT/gateway.out" | head -1)
[ -n "$PORT" ] || { echo "the gateway did not start"; cat "$ROOT/gateway.err"; exit 1; }
user() { # section
  printf '[%s]\ndisplay_name = shoal\nuser_id = shoal\nemail = shoal@example.invalid\ntenant = shoal\naccess_key = %s\nsecret_key = %s\napi_name = \n\n' "$1" $AK $SK
}
{
  printf '[DEFAULT]\nhost = 127.0.0.1\nport = %s\nis_secure = False\nssl_verify = False\n\n' "$PORT"
  printf '[fixtures]\nbucket prefix = shoal-{random}-\niam name prefix = s3-tests-\niam path prefix = /s3-tests/\n\n'
  user "s3 main"; user "s3 alt"; user "s3 tenant"; user "iam"; user "iam root"; user "iam alt root"
} > "$ROOT/s3tests.conf"
cd "$SUITE" && S3TEST_CONF=$ROOT/s3tests.conf python3 -m pytest -q -p no:cacheprovider \
  s3tests/functional/test_s3.py "$@" 2>&1 | tail -n 400
