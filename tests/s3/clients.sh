#!/usr/bin/env bash
# Real S3 clients against `uplink gateway`: aws CLI (cp, ls, rm, sync, multipart),
# rclone (sync + check) and restic (init, backup, restore, check --read-data).
#
#   S3_ENDPOINT=http://127.0.0.1:7780 S3_ACCESS_KEY=... S3_SECRET_KEY=... tests/s3/clients.sh
#
# Needs aws, rclone and restic on PATH (.ci/run installs them: `apt-get install -y
# restic rclone`, `pip install awscli`); a missing tool is a failure, not a skip.
set -euo pipefail

: "${S3_ENDPOINT:?}" "${S3_ACCESS_KEY:?}" "${S3_SECRET_KEY:?}"
for tool in aws rclone restic cmp diff; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL: $tool is not installed (apt-get install -y restic rclone; pip install awscli)" >&2
        exit 2
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { echo "== $*"; }

# The gateway speaks plain HTTP on loopback; a CA bundle set for other uses would only
# make rclone's AWS SDK fail ("unable to load custom CA bundle").
unset AWS_CA_BUNDLE
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
aws_s3() { aws --endpoint-url "$S3_ENDPOINT" s3 "$@"; }

# A tree to store: one file big enough for a multipart upload (the aws CLI splits
# above 8 MiB), small files (some inline in the catalog), nested directories.
src=$work/src
mkdir -p "$src/docs/2024" "$src/photos"
head -c $((20 * 1024 * 1024 + 123)) /dev/urandom >"$src/big.bin"
for i in $(seq 1 30); do
    head -c $((i * 997)) /dev/urandom >"$src/docs/2024/note-$i.txt"
done
for i in $(seq 1 5); do
    head -c $((100000 + i)) /dev/urandom >"$src/photos/img $i.jpg"
done
echo "hello" >"$src/hello.txt"
count=$(find "$src" -type f | wc -l)

step "aws s3 mb / cp (multipart) / ls / cp back"
aws_s3 mb s3://clients
aws_s3 cp "$src/big.bin" s3://clients/big.bin
aws_s3 ls s3://clients/ | grep -q "big.bin"
aws_s3 cp s3://clients/big.bin "$work/big.back"
cmp "$src/big.bin" "$work/big.back"

step "aws s3 sync up, ls --recursive, sync down"
aws_s3 sync "$src" s3://clients/tree
listed=$(aws_s3 ls --recursive s3://clients/tree/ | wc -l)
[ "$listed" -eq "$count" ] || { echo "FAIL: listed $listed of $count files"; exit 1; }
aws_s3 sync s3://clients/tree "$work/tree-back"
diff -r "$src" "$work/tree-back"
# A second sync has nothing to do.
again=$(aws_s3 sync "$src" s3://clients/tree | wc -l)
[ "$again" -eq 0 ] || { echo "FAIL: a repeated sync uploaded $again files"; exit 1; }

step "aws s3 rm"
aws_s3 rm s3://clients/big.bin
if aws_s3 ls s3://clients/big.bin | grep -q big.bin; then
    echo "FAIL: big.bin still listed after rm"; exit 1
fi
aws_s3 rm --recursive s3://clients/tree/docs
left=$(aws_s3 ls --recursive s3://clients/tree/ | wc -l)
[ "$left" -eq $((count - 30)) ] || { echo "FAIL: $left objects left after rm --recursive"; exit 1; }

step "rclone sync + check"
export RCLONE_CONFIG_SHOAL_TYPE=s3 RCLONE_CONFIG_SHOAL_PROVIDER=Other
export RCLONE_CONFIG_SHOAL_ENDPOINT=$S3_ENDPOINT RCLONE_CONFIG_SHOAL_REGION=us-east-1
export RCLONE_CONFIG_SHOAL_ACCESS_KEY_ID=$S3_ACCESS_KEY RCLONE_CONFIG_SHOAL_SECRET_ACCESS_KEY=$S3_SECRET_KEY
rclone mkdir shoal:rclone
rclone sync "$src" shoal:rclone/tree
rclone check "$src" shoal:rclone/tree
rclone sync shoal:rclone/tree "$work/rclone-back"
diff -r "$src" "$work/rclone-back"

step "restic init / backup / restore / check --read-data"
export RESTIC_REPOSITORY="s3:$S3_ENDPOINT/restic" RESTIC_PASSWORD=correct-horse-battery-staple
restic init
restic backup "$src"
restic restore latest --target "$work/restore"
diff -r "$src" "$work/restore$src"
restic check --read-data

echo "all S3 clients passed"
