#!/usr/bin/env python3
"""Fill the demo bucket with the objects that demo/seed.sql's generations point at.

Run after demo/schema.sql and demo/seed.sql, against any S3-compatible endpoint
(scripts/quickstart uses moto on 127.0.0.1:9100):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/retentiond_demo \\
    S3_ENDPOINT=http://127.0.0.1:9100 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \\
    AWS_REGION=eu-central-1 python demo/seed_objects.py

Idempotent: the bucket is created when missing and emptied first (every
version, delete marker and incomplete multipart upload). Then it puts:

- one object per generations.output_key and per element of input_keys
  (a few rows are left without their objects: "already gone" must count as
  success), and a second version of some outputs (edits: version history);
- orphans under generated/orphans/ and uploads/orphans/ that no row points at,
  a few of them deleted again (only a noncurrent version and a delete marker left);
- pinned objects under generated/pinned/ (excluded from the orphan rule);
- keys with spaces, unicode and URL-special characters;
- one incomplete multipart upload under uploads/.

Needs boto3 (scripts/requirements-dev.txt) and the psql client; no Postgres driver.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"

ODD_KEYS = [
    "generated/odd names/résumé #1.png",
    "generated/odd names/日本語/画像 2.png",
    "generated/odd names/a+b=c&d?x=1.png",
    "generated/odd names/100% done.png",
    "uploads/odd names/emoji 🎨 palette.jpg",
    "uploads/odd names/quote's \"here\".jpg",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bucket", default=os.environ.get("SEED_BUCKET", "kiara-assets"))
    p.add_argument("--endpoint", default=os.environ.get("S3_ENDPOINT"),
                   help="S3 endpoint URL (default: $S3_ENDPOINT; unset = AWS)")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "eu-central-1"))
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    p.add_argument("--workers", type=int, default=16, help="concurrent uploads")
    p.add_argument("--orphans", type=int, default=50)
    p.add_argument("--pinned", type=int, default=10)
    p.add_argument("--no-versioning", action="store_true",
                   help="leave bucket versioning off (default: enable it)")
    args = p.parse_args()
    if not args.database_url:
        p.error("DATABASE_URL (or --database-url) is required")
    return args


def body(kind: str, size: int) -> bytes:
    magic = PNG_MAGIC if kind == "png" else JPEG_MAGIC
    return magic + os.urandom(max(0, size - len(magic)))


def content_type(key: str) -> str:
    return "image/png" if key.endswith(".png") else "image/jpeg"


def generation_keys(database_url: str) -> list[tuple[int, str | None, list[str]]]:
    """(id, output_key, input_keys) of every generations row, via psql."""
    sql = ("SELECT id, coalesce(output_key, ''), array_to_json(input_keys) "
           "FROM public.generations ORDER BY id")
    out = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-F", "\t", "-d", database_url, "-c", sql],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        if not line.strip():
            continue
        gid, output_key, inputs = line.split("\t")
        rows.append((int(gid), output_key or None, json.loads(inputs)))
    return rows


def bucket_exists(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def empty_bucket(s3, bucket: str) -> tuple[int, int]:
    """Deletes every object version, delete marker and multipart upload.

    Lists everything first and deletes afterwards (deleting while paginating
    skips entries on some stores), by version id so that a versioned bucket
    gets no new delete markers; repeats until the listing is empty.
    """
    aborted = 0
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for up in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            aborted += 1
    deleted = 0
    for _ in range(10):
        batch = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            batch += [{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if not batch:
            return deleted, aborted
        for i in range(0, len(batch), 1000):
            resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch[i:i + 1000], "Quiet": True})
            if resp.get("Errors"):
                raise RuntimeError(f"failed to empty bucket: {resp['Errors'][:3]}")
        deleted += len(batch)
    raise RuntimeError(f"bucket {bucket} still not empty after 10 rounds")


def main() -> int:
    args = parse_args()
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        region_name=args.region,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=args.workers * 2,
                      retries={"max_attempts": 5, "mode": "standard"}),
    )
    b = args.bucket
    where = args.endpoint or "AWS"

    if bucket_exists(s3, b):
        deleted, aborted = empty_bucket(s3, b)
        print(f"bucket {b} at {where}: emptied ({deleted} versions/markers deleted, "
              f"{aborted} multipart uploads aborted)")
    else:
        kwargs = {"Bucket": b}
        if args.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": args.region}
        s3.create_bucket(**kwargs)
        print(f"bucket {b} at {where}: created in {args.region}")
    # Versioning cannot be switched off once on, only suspended.
    status = s3.get_bucket_versioning(Bucket=b).get("Status") or "off"
    wanted = "Suspended" if args.no_versioning else "Enabled"
    if status != wanted and not (wanted == "Suspended" and status == "off"):
        s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": wanted})
        status = wanted
    print(f"versioning: {status}")

    rows = generation_keys(args.database_url)

    # (key, body) of every put, in order; a key listed twice gets two versions.
    puts: list[tuple[str, bytes]] = []
    linked = missing = 0
    for i, (gid, output_key, inputs) in enumerate(rows):
        # Every 150th row lost its objects already (say, a manual clean-up).
        if i % 150 == 149:
            missing += (1 if output_key else 0) + len(inputs)
            continue
        for key in inputs:
            puts.append((key, body("jpg", 300 + gid % 400)))
            linked += 1
        if output_key:
            puts.append((output_key, body("png", 200 + gid % 500)))
            linked += 1
    # About one output in twenty was edited: a second, newer version of the same key.
    edited = [k for k, _ in puts if k.startswith("generated/")][::20]
    puts += [(k, body("png", 350)) for k in edited]

    orphans = [f"generated/orphans/{uuid.uuid4()}.png" for _ in range(args.orphans // 2)]
    orphans += [f"uploads/orphans/{uuid.uuid4()}.jpg" for _ in range(args.orphans - args.orphans // 2)]
    pinned = [f"generated/pinned/brand-kit-{n:02d}.png" for n in range(1, args.pinned + 1)]
    extra = orphans + pinned + ODD_KEYS
    puts += [(k, body("png" if k.endswith(".png") else "jpg", 256)) for k in extra]

    def put(item: tuple[str, bytes]) -> None:
        key, data = item
        s3.put_object(Bucket=b, Key=key, Body=data, ContentType=content_type(key))

    # Later versions must land after the first ones: put the unique keys first.
    first = puts[: len(puts) - len(edited) - len(extra)]
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(put, first))
        list(pool.map(put, puts[len(first):]))

    # A few orphans the user deleted: only a delete marker and a noncurrent version remain.
    tombstoned = orphans[:3] if status == "Enabled" else []
    for key in tombstoned:
        s3.delete_object(Bucket=b, Key=key)

    # An upload that was started and never finished: invisible, but holds input data.
    mpu_key = f"uploads/incomplete/{uuid.uuid4()}.jpg"
    up = s3.create_multipart_upload(Bucket=b, Key=mpu_key, ContentType="image/jpeg")
    s3.upload_part(Bucket=b, Key=mpu_key, UploadId=up["UploadId"], PartNumber=1, Body=body("jpg", 1024))

    print(f"generations rows: {len(rows)}; linked objects put: {linked}; "
          f"rows' keys left missing on purpose: {missing}")
    print(f"second versions (edits): {len(edited)}; orphans: {len(orphans)} "
          f"({len(tombstoned)} with a delete marker); pinned: {len(pinned)}; odd keys: {len(ODD_KEYS)}")
    print(f"incomplete multipart uploads: 1 ({mpu_key}); total puts: {len(puts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
