#!/usr/bin/env python3
"""Drives `uplink gateway` with boto3, an unmodified real S3 client library.

Run by tests/tests/gateway.rs against a gateway on a local network (or by hand):

    S3_ENDPOINT=http://127.0.0.1:7780 S3_ACCESS_KEY=... S3_SECRET_KEY=... \
        python3 tests/s3/boto3_suite.py

Every check asserts; the script exits non-zero on the first failure and prints which.
"""

import datetime
import hashlib
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from unittest import mock

import boto3
import botocore
import botocore.handlers
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["S3_ENDPOINT"]
ACCESS = os.environ["S3_ACCESS_KEY"]
SECRET = os.environ["S3_SECRET_KEY"]
MIB = 1024 * 1024


def client(secret=SECRET, access=ACCESS, style="path", endpoint=ENDPOINT, **kw):
    # Retries as every SDK does them (5xx and throttling only; a 4xx is never retried,
    # so error-code checks see the first answer), and room for a loaded test machine.
    cfg = Config(
        signature_version=kw.pop("signature_version", "s3v4"),
        s3={"addressing_style": style},
        retries={"max_attempts": 3, "mode": "standard"},
        read_timeout=300,
        **kw,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=cfg,
    )


s3 = client()


def code_of(fn, *args, **kwargs):
    """The S3 error code (and HTTP status) a call fails with."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__} succeeded but should have failed")


def expect_error(code, status, fn, *args, **kwargs):
    got = code_of(fn, *args, **kwargs)
    assert got == (code, status), f"{fn.__name__}: expected {(code, status)}, got {got}"


def md5(b):
    return hashlib.md5(b).hexdigest()


def data(n, seed):
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def buckets():
    assert s3.list_buckets()["Buckets"] == []
    s3.create_bucket(Bucket="alpha")
    # Re-creating a bucket one owns answers 200 in us-east-1 (S3's legacy behaviour).
    s3.create_bucket(Bucket="alpha")
    for bad in ["Bad_Name", "ab", "192.168.1.1", "a..b", "-abc"]:
        expect_error("InvalidBucketName", 400, s3.create_bucket, Bucket=bad)
    s3.head_bucket(Bucket="alpha")
    expect_error("404", 404, s3.head_bucket, Bucket="missing")
    expect_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket="missing")
    assert s3.get_bucket_location(Bucket="alpha").get("LocationConstraint") is None
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert names == ["alpha"], names


def sent_bytes(value):
    """The bytes of a header value as botocore returns it (http.client reads header
    bytes as Latin-1)."""
    return value.encode("latin-1")


@check
def put_and_get_with_metadata():
    body = "Grüße aus dem Netz".encode()
    # botocore refuses non-ASCII metadata before sending; without that check it sends
    # the value's UTF-8 bytes. The gateway returns every value as the bytes it was sent
    # as: raw UTF-8 as raw UTF-8 (as Ceph RGW does), an RFC 2047 encoded-word as that
    # encoded-word (S3 decodes it on store and encodes it again on return).
    s3.meta.events.unregister(
        "before-parameter-build.s3.PutObject", botocore.handlers.validate_ascii_metadata
    )
    r = s3.put_object(
        Bucket="alpha",
        Key="notes/hello.txt",
        Body=body,
        ContentType="text/plain; charset=utf-8",
        CacheControl="no-cache",
        Metadata={"author": "Zoë", "purpose": "=?UTF-8?B?w7xiZXI=?="},
    )
    assert r["ETag"] == f'"{md5(body)}"', r["ETag"]
    g = s3.get_object(Bucket="alpha", Key="notes/hello.txt")
    assert g["Body"].read() == body
    assert g["ETag"] == f'"{md5(body)}"'
    assert g["ContentType"] == "text/plain; charset=utf-8"
    assert g["CacheControl"] == "no-cache"
    meta = {k: sent_bytes(v) for k, v in g["Metadata"].items()}
    assert meta == {"author": "Zoë".encode(), "purpose": b"=?UTF-8?B?w7xiZXI=?="}, meta
    assert g["ContentLength"] == len(body)
    h = s3.head_object(Bucket="alpha", Key="notes/hello.txt")
    assert h["ContentLength"] == len(body) and h["ETag"] == g["ETag"]
    assert sent_bytes(h["Metadata"]["author"]) == "Zoë".encode(), h["Metadata"]
    s3.head_object(Bucket="alpha", Key="notes/hello.txt", VersionId="null")
    expect_error(
        "MetadataTooLarge", 400, s3.put_object, Bucket="alpha", Key="fat", Body=b"x",
        Metadata={"big": "x" * 3000},
    )
    expect_error("404", 404, s3.head_object, Bucket="alpha", Key="notes/none")
    expect_error("NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="notes/none")


@check
def larger_objects_and_ranges():
    body = data(3 * MIB + 17, 1)
    s3.put_object(Bucket="alpha", Key="big.bin", Body=body)
    g = s3.get_object(Bucket="alpha", Key="big.bin")
    assert g["Body"].read() == body
    assert g["ETag"] == f'"{md5(body)}"'
    for rng, want in [
        ("bytes=0-9", body[0:10]),
        ("bytes=100-", body[100:]),
        ("bytes=-50", body[-50:]),
        (f"bytes={len(body) - 1}-{len(body) + 100}", body[-1:]),
        ("bytes=1048570-2097160", body[1048570:2097161]),
    ]:
        r = s3.get_object(Bucket="alpha", Key="big.bin", Range=rng)
        assert r["Body"].read() == want, rng
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206, rng
        assert r["ContentRange"].endswith(f"/{len(body)}"), r["ContentRange"]
    expect_error(
        "InvalidRange", 416, s3.get_object, Bucket="alpha", Key="big.bin",
        Range=f"bytes={len(body)}-",
    )
    # An empty object.
    s3.put_object(Bucket="alpha", Key="empty", Body=b"")
    assert s3.get_object(Bucket="alpha", Key="empty")["Body"].read() == b""
    assert s3.head_object(Bucket="alpha", Key="empty")["ETag"] == f'"{md5(b"")}"'


@check
def digests_are_checked():
    body = b"checked content"
    import base64

    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket="alpha", Key="md5-ok", Body=body, ContentMD5=good)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    expect_error("BadDigest", 400, s3.put_object, Bucket="alpha", Key="md5-bad", Body=body, ContentMD5=wrong)
    expect_error("NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="md5-bad")
    # Flexible checksums: SHA256 and CRC32 computed by the client (sent in a trailer
    # with STREAMING-UNSIGNED-PAYLOAD-TRAILER, or in a header).
    for alg in ["SHA256", "CRC32", "SHA1"]:  # CRC32C needs botocore[crt]
        r = s3.put_object(Bucket="alpha", Key=f"sum-{alg}", Body=data(70000, 2), ChecksumAlgorithm=alg)
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert s3.get_object(Bucket="alpha", Key=f"sum-{alg}")["Body"].read() == data(70000, 2)
    bad_crc = base64.b64encode((12345).to_bytes(4, "big")).decode()
    expect_error(
        "BadDigest", 400, s3.put_object, Bucket="alpha", Key="crc-bad", Body=body,
        ChecksumCRC32=bad_crc,
    )
    expect_error("NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="crc-bad")


@check
def conditional_requests():
    body = b"conditional"
    etag = s3.put_object(Bucket="alpha", Key="cond", Body=body)["ETag"]
    assert s3.get_object(Bucket="alpha", Key="cond", IfMatch=etag)["Body"].read() == body
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket="alpha", Key="cond", IfMatch='"0000"')
    expect_error("304", 304, s3.get_object, Bucket="alpha", Key="cond", IfNoneMatch=etag)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    expect_error("304", 304, s3.get_object, Bucket="alpha", Key="cond", IfModifiedSince=future)
    assert s3.get_object(Bucket="alpha", Key="cond", IfModifiedSince=past)["Body"].read() == body
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket="alpha", Key="cond", IfUnmodifiedSince=past)
    assert s3.get_object(Bucket="alpha", Key="cond", IfUnmodifiedSince=future)["Body"].read() == body
    expect_error("412", 412, s3.head_object, Bucket="alpha", Key="cond", IfMatch='"nope"')
    # Conditional writes.
    expect_error("PreconditionFailed", 412, s3.put_object, Bucket="alpha", Key="cond", Body=b"x", IfNoneMatch="*")
    s3.put_object(Bucket="alpha", Key="cond-new", Body=b"x", IfNoneMatch="*")
    expect_error("PreconditionFailed", 412, s3.put_object, Bucket="alpha", Key="cond", Body=b"x", IfMatch='"bad"')
    expect_error("NoSuchKey", 404, s3.put_object, Bucket="alpha", Key="cond-none", Body=b"x", IfMatch=etag)
    s3.put_object(Bucket="alpha", Key="cond", Body=b"y", IfMatch=etag)
    # A 304 still names the object.
    try:
        s3.get_object(Bucket="alpha", Key="cond-new", IfNoneMatch="*")
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPHeaders"].get("etag"), e.response


@check
def listings_in_key_order_with_pagination():
    s3.create_bucket(Bucket="listing")
    keys = sorted(
        [f"photos/2024/{i:02}.jpg" for i in range(7)]
        + [f"photos/2025/{i:02}.jpg" for i in range(3)]
        + ["a.txt", "b c.txt", "photos/cover.jpg", "z/deep/er/x", "zz", "ü.txt"]
    )
    for k in keys:
        s3.put_object(Bucket="listing", Key=k, Body=k.encode())
    # Everything, one key per page, in strictly ascending UTF-8 order.
    got, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="listing", MaxKeys=1, **kw)
        assert r["KeyCount"] == len(r.get("Contents", []))
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert got == sorted(keys, key=lambda k: k.encode()), got
    # Delimiter: folded prefixes, paginated by 2.
    rows, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket="listing", Delimiter="/", MaxKeys=2, **kw)
        rows += [("K", o["Key"]) for o in r.get("Contents", [])]
        rows += [("P", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert sorted(rows, key=lambda x: x[1]) == [
        ("K", "a.txt"), ("K", "b c.txt"), ("P", "photos/"), ("P", "z/"), ("K", "zz"), ("K", "ü.txt"),
    ], rows
    r = s3.list_objects_v2(Bucket="listing", Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["photos/2024/", "photos/2025/"]
    assert [o["Key"] for o in r["Contents"]] == ["photos/cover.jpg"]
    r = s3.list_objects_v2(Bucket="listing", MaxKeys=0)
    assert r["KeyCount"] == 0 and not r["IsTruncated"] and "Contents" not in r
    r = s3.list_objects_v2(Bucket="listing", StartAfter="photos/2025/01.jpg", MaxKeys=2)
    assert [o["Key"] for o in r["Contents"]] == ["photos/2025/02.jpg", "photos/cover.jpg"]
    # Asked for explicitly, boto3 leaves the encoding alone (as the s3-tests suite
    # expects it: %20 for a space, %2B for a plus).
    r = s3.list_objects_v2(Bucket="listing", Prefix="b", EncodingType="url")
    assert [o["Key"] for o in r["Contents"]] == ["b%20c.txt"], r["Contents"]
    assert r["EncodingType"] == "url"
    # v1 with markers.
    got, marker = [], ""
    while True:
        r = s3.list_objects(Bucket="listing", Marker=marker, MaxKeys=3)
        page = [o["Key"] for o in r.get("Contents", [])]
        got += page
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker", page[-1])
    assert got == sorted(keys, key=lambda k: k.encode())
    r = s3.list_objects(Bucket="listing", Delimiter="/", MaxKeys=3)
    assert r["IsTruncated"] and r["NextMarker"] == "photos/", r.get("NextMarker")
    r = s3.list_objects(Bucket="listing", Delimiter="/", Marker="photos/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["z/"]
    v = s3.list_object_versions(Bucket="listing", Prefix="photos/2025/")
    assert [(x["Key"], x["VersionId"], x["IsLatest"]) for x in v["Versions"]] == [
        (f"photos/2025/{i:02}.jpg", "null", True) for i in range(3)
    ]
    expect_error("InvalidArgument", 400, s3.list_objects_v2, Bucket="listing", ContinuationToken="garbage!")


@check
def copies():
    body = data(200_000, 3)
    etag = s3.put_object(Bucket="alpha", Key="src.bin", Body=body, Metadata={"k": "v"})["ETag"]
    r = s3.copy_object(Bucket="alpha", Key="copy.bin", CopySource={"Bucket": "alpha", "Key": "src.bin"})
    assert r["CopyObjectResult"]["ETag"] == etag
    g = s3.get_object(Bucket="alpha", Key="copy.bin")
    assert g["Body"].read() == body and g["Metadata"] == {"k": "v"}
    s3.create_bucket(Bucket="beta")
    s3.copy_object(
        Bucket="beta", Key="replaced.bin", CopySource="alpha/src.bin",
        MetadataDirective="REPLACE", Metadata={"new": "yes"}, ContentType="application/x-test",
    )
    g = s3.get_object(Bucket="beta", Key="replaced.bin")
    assert g["Body"].read() == body
    assert g["Metadata"] == {"new": "yes"} and g["ContentType"] == "application/x-test"
    expect_error(
        "InvalidRequest", 400, s3.copy_object, Bucket="alpha", Key="src.bin",
        CopySource={"Bucket": "alpha", "Key": "src.bin"},
    )
    s3.copy_object(
        Bucket="alpha", Key="src.bin", CopySource={"Bucket": "alpha", "Key": "src.bin"},
        MetadataDirective="REPLACE", Metadata={"k": "changed"},
    )
    assert s3.head_object(Bucket="alpha", Key="src.bin")["Metadata"] == {"k": "changed"}
    expect_error(
        "PreconditionFailed", 412, s3.copy_object, Bucket="alpha", Key="c2",
        CopySource="alpha/src.bin", CopySourceIfMatch='"0000"',
    )
    expect_error(
        "PreconditionFailed", 412, s3.copy_object, Bucket="alpha", Key="c2",
        CopySource="alpha/src.bin", CopySourceIfNoneMatch=etag,
    )
    expect_error("NoSuchKey", 404, s3.copy_object, Bucket="alpha", Key="c3", CopySource="alpha/none")
    # The copies share pieces: deleting the source keeps them readable.
    s3.delete_object(Bucket="alpha", Key="src.bin")
    assert s3.get_object(Bucket="alpha", Key="copy.bin")["Body"].read() == body
    assert s3.get_object(Bucket="beta", Key="replaced.bin")["Body"].read() == body


@check
def deletes():
    s3.put_object(Bucket="alpha", Key="gone", Body=b"bye")
    r = s3.delete_object(Bucket="alpha", Key="gone")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    expect_error("NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="gone")
    assert s3.delete_object(Bucket="alpha", Key="never")["ResponseMetadata"]["HTTPStatusCode"] == 204
    for k in ["d1", "d2", "d3"]:
        s3.put_object(Bucket="alpha", Key=k, Body=k.encode())
    r = s3.delete_objects(
        Bucket="alpha",
        Delete={"Objects": [{"Key": "d1"}, {"Key": "d2"}, {"Key": "not-there"}]},
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == ["d1", "d2", "not-there"], r
    assert "Errors" not in r
    r = s3.delete_objects(Bucket="alpha", Delete={"Objects": [{"Key": "d3"}], "Quiet": True})
    assert not r.get("Deleted")
    expect_error("NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="d3")


@check
def multipart_uploads():
    parts_data = [data(5 * MIB, 10), data(5 * MIB, 11), data(5 * MIB, 12), data(123_457, 13)]
    whole = b"".join(parts_data)
    up = s3.create_multipart_upload(Bucket="alpha", Key="mp/object.bin", ContentType="application/x-mp", Metadata={"m": "1"})
    uid = up["UploadId"]
    listed = s3.list_multipart_uploads(Bucket="alpha")
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [("mp/object.bin", uid)]
    etags = []
    # Out of order, as parallel clients send them.
    for n in [2, 1, 4, 3]:
        r = s3.upload_part(Bucket="alpha", Key="mp/object.bin", UploadId=uid, PartNumber=n, Body=parts_data[n - 1])
        assert r["ETag"] == f'"{md5(parts_data[n - 1])}"'
    etags = {n: f'"{md5(parts_data[n - 1])}"' for n in range(1, 5)}
    lp = s3.list_parts(Bucket="alpha", Key="mp/object.bin", UploadId=uid, MaxParts=3)
    assert [p["PartNumber"] for p in lp["Parts"]] == [1, 2, 3] and lp["IsTruncated"]
    lp2 = s3.list_parts(Bucket="alpha", Key="mp/object.bin", UploadId=uid, PartNumberMarker=lp["NextPartNumberMarker"])
    assert [(p["PartNumber"], p["Size"]) for p in lp2["Parts"]] == [(4, 123_457)]
    complete = {"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in range(1, 5)]}
    expect_error(
        "InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket="alpha", Key="mp/object.bin",
        UploadId=uid, MultipartUpload={"Parts": list(reversed(complete["Parts"]))},
    )
    expect_error(
        "InvalidPart", 400, s3.complete_multipart_upload, Bucket="alpha", Key="mp/object.bin",
        UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]},
    )
    expect_error(
        "EntityTooSmall", 400, s3.complete_multipart_upload, Bucket="alpha", Key="mp/object.bin",
        UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 4, "ETag": etags[4]}, {"PartNumber": 5, "ETag": etags[4]}]},
    )
    r = s3.complete_multipart_upload(Bucket="alpha", Key="mp/object.bin", UploadId=uid, MultipartUpload=complete)
    expected_etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts_data)).hexdigest() + "-4"
    assert r["ETag"] == f'"{expected_etag}"', r["ETag"]
    # A repeated Complete succeeds with the same answer, as on AWS.
    r2 = s3.complete_multipart_upload(Bucket="alpha", Key="mp/object.bin", UploadId=uid, MultipartUpload=complete)
    assert r2["ETag"] == r["ETag"]
    g = s3.get_object(Bucket="alpha", Key="mp/object.bin")
    assert g["Body"].read() == whole
    assert g["ContentType"] == "application/x-mp" and g["Metadata"] == {"m": "1"}
    assert g["ETag"] == f'"{expected_etag}"'
    r = s3.get_object(Bucket="alpha", Key="mp/object.bin", Range=f"bytes={5 * MIB - 10}-{5 * MIB + 9}")
    assert r["Body"].read() == whole[5 * MIB - 10 : 5 * MIB + 10]
    r = s3.get_object(Bucket="alpha", Key="mp/object.bin", PartNumber=2)
    assert r["Body"].read() == parts_data[1] and r["PartsCount"] == 4
    assert s3.list_multipart_uploads(Bucket="alpha").get("Uploads", []) == []
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket="alpha", Key="mp/object.bin", UploadId=uid)

    # Abort: the upload and its parts are gone.
    up = s3.create_multipart_upload(Bucket="alpha", Key="mp/aborted")
    s3.upload_part(Bucket="alpha", Key="mp/aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1000)
    s3.abort_multipart_upload(Bucket="alpha", Key="mp/aborted", UploadId=up["UploadId"])
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket="alpha", Key="mp/aborted", UploadId=up["UploadId"])
    expect_error("NoSuchUpload", 404, s3.upload_part, Bucket="alpha", Key="mp/aborted", UploadId=up["UploadId"], PartNumber=1, Body=b"y")
    expect_error("NoSuchUpload", 404, s3.abort_multipart_upload, Bucket="alpha", Key="mp/aborted", UploadId="0" * 32)
    expect_error("NoSuchKey", 404, s3.get_object, Bucket="alpha", Key="mp/aborted")

    # UploadPartCopy: a part made from a range of another object.
    up = s3.create_multipart_upload(Bucket="alpha", Key="mp/copied")
    u2 = up["UploadId"]
    p1 = s3.upload_part_copy(
        Bucket="alpha", Key="mp/copied", UploadId=u2, PartNumber=1,
        CopySource="alpha/mp/object.bin", CopySourceRange=f"bytes=0-{5 * MIB - 1}",
    )["CopyPartResult"]["ETag"]
    p2 = s3.upload_part_copy(
        Bucket="alpha", Key="mp/copied", UploadId=u2, PartNumber=2, CopySource="alpha/big.bin",
    )["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(
        Bucket="alpha", Key="mp/copied", UploadId=u2,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]},
    )
    got = s3.get_object(Bucket="alpha", Key="mp/copied")["Body"].read()
    assert got == whole[: 5 * MIB] + data(3 * MIB + 17, 1)


@check
def a_part_sent_again():
    # A client sends part 1 again (a retry) and keeps both ETags in the order it got
    # them, as the conformance suite's test_multipart_resend_first_finishes_last does:
    # the upload that finished last is the part, and a Complete naming the replaced
    # upload alone is InvalidPart.
    key = "mp/resent.bin"
    uid = s3.create_multipart_upload(Bucket="alpha", Key=key)["UploadId"]
    first, second = data(1000, 20), data(1000, 21)
    e1 = s3.upload_part(Bucket="alpha", Key=key, UploadId=uid, PartNumber=1, Body=first)["ETag"]
    e2 = s3.upload_part(Bucket="alpha", Key=key, UploadId=uid, PartNumber=1, Body=second)["ETag"]
    expect_error(
        "InvalidPart", 400, s3.complete_multipart_upload, Bucket="alpha", Key=key,
        UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]},
    )
    parts = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 1, "ETag": e2}]
    s3.complete_multipart_upload(Bucket="alpha", Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket="alpha", Key=key)["Body"].read() == second
    s3.delete_object(Bucket="alpha", Key=key)


@check
def high_level_transfers():
    # boto3's managed transfer: multipart with parallel parts on upload, ranged GETs on
    # download.
    import io

    from boto3.s3.transfer import TransferConfig

    cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=4)
    body = data(17 * MIB + 3, 20)
    s3.upload_fileobj(io.BytesIO(body), "alpha", "managed.bin", Config=cfg)
    out = io.BytesIO()
    s3.download_fileobj("alpha", "managed.bin", out, Config=cfg)
    assert out.getvalue() == body


@check
def authentication():
    expect_error("SignatureDoesNotMatch", 403, client(secret="wrong" + SECRET).list_buckets)
    expect_error("InvalidAccessKeyId", 403, client(access="AKIDNOTOURS").list_buckets)
    anon = boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}),
    )
    expect_error("AccessDenied", 403, anon.list_buckets)
    expect_error("AccessDenied", 403, anon.get_object, Bucket="alpha", Key="big.bin")
    # Every answer carries a request id, in the header and in an error document.
    try:
        s3.get_object(Bucket="alpha", Key="no-such-key")
    except ClientError as e:
        rid = e.response["ResponseMetadata"]["RequestId"]
        assert rid and e.response["Error"].get("RequestId", rid) == rid, e.response
    # Presigned URLs: a valid one works, an expired one is refused.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "notes/hello.txt"}, ExpiresIn=300)
    with urllib.request.urlopen(url) as r:
        assert r.read() == "Grüße aus dem Netz".encode()
    signed_long_ago = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=2)
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_long_ago):
        old = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "notes/hello.txt"}, ExpiresIn=60)
    try:
        urllib.request.urlopen(old)
        raise AssertionError("an expired presigned URL was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
        assert b"AccessDenied" in e.read()
    # At most a week, as on S3.
    too_long = s3.generate_presigned_url("get_object", Params={"Bucket": "alpha", "Key": "notes/hello.txt"}, ExpiresIn=604801)
    try:
        urllib.request.urlopen(too_long)
        raise AssertionError("a presigned URL valid for more than a week was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
    # A presigned PUT.
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "alpha", "Key": "presigned-put"}, ExpiresIn=300)
    req = urllib.request.Request(put_url, data=b"via presigned", method="PUT")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
    assert s3.get_object(Bucket="alpha", Key="presigned-put")["Body"].read() == b"via presigned"


@check
def virtual_host_style():
    port = ENDPOINT.rsplit(":", 1)[1]
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host.endswith(".localhost") or host == "localhost":
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    with mock.patch("socket.getaddrinfo", side_effect=resolve):
        v = client(style="virtual", endpoint=f"http://localhost:{port}")
        v.put_object(Bucket="alpha", Key="vhost.txt", Body=b"virtual")
        assert v.get_object(Bucket="alpha", Key="vhost.txt")["Body"].read() == b"virtual"
        assert "vhost.txt" in [o["Key"] for o in v.list_objects_v2(Bucket="alpha", Prefix="vhost")["Contents"]]
    assert s3.get_object(Bucket="alpha", Key="vhost.txt")["Body"].read() == b"virtual"


@check
def not_implemented_and_bucket_removal():
    expect_error("NotImplemented", 501, s3.get_bucket_tagging, Bucket="alpha")
    expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket="alpha")
    s3.create_bucket(Bucket="empty-one")
    assert s3.delete_bucket(Bucket="empty-one")["ResponseMetadata"]["HTTPStatusCode"] == 204
    expect_error("NoSuchBucket", 404, s3.delete_bucket, Bucket="empty-one")


@check
def metrics_page():
    with urllib.request.urlopen(f"{ENDPOINT}/_shoal/metrics") as r:
        text = r.read().decode()
    assert 'shoal_gateway_requests_total{operation="PutObject",status="200"}' in text, text[:2000]
    assert "shoal_gateway_request_seconds_bucket" in text
    assert 'status="403"' in text


def main():
    only = set(sys.argv[1:])
    for fn in CHECKS:
        if only and fn.__name__ not in only:
            continue
        t = time.monotonic()
        fn()
        print(f"ok   {fn.__name__} ({time.monotonic() - t:.1f} s)", flush=True)
    print(f"all {len(CHECKS)} checks passed" if not only else "selected checks passed")


if __name__ == "__main__":
    main()
