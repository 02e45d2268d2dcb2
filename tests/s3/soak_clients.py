#!/usr/bin/env python3
"""S3 load for the soak test: concurrent writes, deletes and listings.

    soak_clients.py ENDPOINT ACCESS SECRET BUCKET CLIENTS SECONDS [--tolerate-errors]

Client i (a thread with its own boto3 client) loops for SECONDS: PUT `s3/cNN/JJJJJJ`
(512 random bytes, inline in the catalog), every 4th step DELETE the key it put two
steps before, every 7th step LIST its own prefix and check that every key it wrote and
did not delete is there (read your writes). Every call is timed.

Prints one JSON line: counts, the slowest call (seconds and what), the keys still live
and the errors. Exits 1 on any error unless --tolerate-errors (used while the gateway
is being stopped).
"""
import json
import os
import sys
import threading
import time

import boto3
from botocore.config import Config

endpoint, access, secret, bucket = sys.argv[1:5]
clients, seconds = int(sys.argv[5]), float(sys.argv[6])
tolerate = "--tolerate-errors" in sys.argv[7:]
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
             connect_timeout=10, read_timeout=60, max_pool_connections=2)
made = [boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                     aws_secret_access_key=secret, region_name="us-east-1", config=cfg)
        for _ in range(clients)]
lock = threading.Lock()
stats = {"puts": 0, "deletes": 0, "lists": 0, "slowest_s": 0.0, "slowest": ""}
live = set()
errors = []


def timed(what, f):
    t0 = time.monotonic()
    out = f()
    took = time.monotonic() - t0
    with lock:
        if took > stats["slowest_s"]:
            stats["slowest_s"] = took
            stats["slowest"] = what
    return out


def run(i):
    s3 = made[i]
    prefix = f"s3/c{i:02}/"
    mine = []
    deadline = time.monotonic() + seconds
    j = 0
    try:
        while time.monotonic() < deadline:
            key = f"{prefix}{j:06}"
            timed(f"PUT {key}", lambda: s3.put_object(Bucket=bucket, Key=key,
                                                      Body=os.urandom(512)))
            mine.append(key)
            with lock:
                stats["puts"] += 1
                live.add(key)
            if j % 4 == 3 and len(mine) >= 3:
                gone = mine.pop(-3)
                timed(f"DELETE {gone}", lambda: s3.delete_object(Bucket=bucket, Key=gone))
                with lock:
                    stats["deletes"] += 1
                    live.discard(gone)
            if j % 7 == 6:
                keys = set()
                token = None
                while True:
                    kw = {"Bucket": bucket, "Prefix": prefix}
                    if token:
                        kw["ContinuationToken"] = token
                    page = timed(f"LIST {prefix}", lambda: s3.list_objects_v2(**kw))
                    keys.update(o["Key"] for o in page.get("Contents", []))
                    if not page.get("IsTruncated"):
                        break
                    token = page["NextContinuationToken"]
                missing = set(mine) - keys
                if missing:
                    raise AssertionError(f"listing of {prefix} misses {sorted(missing)[:3]}")
                with lock:
                    stats["lists"] += 1
            j += 1
    except Exception as e:  # reported below
        with lock:
            errors.append(f"client {i}: {e!r}")


threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
stats["live"] = sorted(live)
stats["errors"] = errors
print(json.dumps(stats))
sys.exit(1 if errors and not tolerate else 0)
