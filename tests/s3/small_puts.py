#!/usr/bin/env python3
"""PUTs of small objects per second through an S3 endpoint, at a given concurrency.

    small_puts.py ENDPOINT ACCESS SECRET BUCKET CLIENTS OBJECTS_PER_CLIENT SIZE

Each client is a thread with its own boto3 client; every PUT is acknowledged by the
gateway only once durable (its catalog change published). Prints one line.
"""
import os
import sys
import threading
import time

import boto3
from botocore.config import Config

endpoint, access, secret, bucket = sys.argv[1:5]
clients, per_client, size = (int(x) for x in sys.argv[5:8])
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
             max_pool_connections=2)
made = [boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                     aws_secret_access_key=secret, region_name="us-east-1", config=cfg)
        for _ in range(clients)]
body = os.urandom(size)
errors = []


def run(i):
    s3 = made[i]
    try:
        for j in range(per_client):
            s3.put_object(Bucket=bucket, Key=f"small-{clients}/{i:03}/{j:05}", Body=body)
    except Exception as e:  # reported below, fails the run
        errors.append(repr(e))


threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
t0 = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - t0
if errors:
    print(f"FAILED: {errors[:3]}")
    sys.exit(1)
n = clients * per_client
print(f"gateway-bench case=small-put size={size} clients={clients} puts={n} "
      f"puts_per_s={n / elapsed:.1f} (each acknowledged durable)")
