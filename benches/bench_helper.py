#!/usr/bin/env python3
"""Small helpers for the bench scripts in benches/ (standard library only).

  free-port                      print a TCP port free on 127.0.0.1 a moment ago
  make-zip OUT SIZE NAME [sh]    write a provider zip of ~SIZE bytes: one stored (uncompressed)
                                 executable NAME of random bytes (after a "#!/bin/sh" stub that
                                 exits 1, with "sh"); prints "sha256hex size"
  manifest CONFIG_DIGEST CONFIG_SIZE LAYER_DIGEST LAYER_SIZE PLATFORMS
                                 print the seed-layout OCI image manifest
  json-archive-url FILE PLATFORM print archives[PLATFORM].url of a VERSION.json
  origin-counts LOG FROM_LINE    origin requests (GET/HEAD on /v2/) per key in docker-registry's
                                 access log after line FROM_LINE; prints
                                 "total<TAB>most for one key<TAB>keys<TAB>key: n; ..."
  static-version OURS_JSON OURS_URL TYPE VERSION
                                 print the VERSION.json OURS_JSON (fetched from OURS_URL) with
                                 each archive URL a plain file name next to it; on stderr
                                 "absolute-url file-name" per archive
  median X...                    print the median of the numbers
  median-time T...               print the median of wrk latencies (850.00us, 5.13ms, 1.02s) in ms
  min X...                       print the smallest of the numbers
  max X...                       print the largest of the numbers
"""
import hashlib
import json
import os
import re
import socket
import statistics
import sys
import zipfile
from urllib.parse import urljoin

SH_STUB = b"#!/bin/sh\nexit 1\n"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def make_zip(out, size, name, stub=False):
    """Writes the zip; returns (sha256 hex, file size)."""
    size = int(size)
    chunk = 8 << 20
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o100755 << 16
        info.compress_type = zipfile.ZIP_STORED
        with z.open(info, "w", force_zip64=size >= (1 << 31)) as f:
            if stub:
                f.write(SH_STUB)
            left = size
            while left > 0:
                n = min(chunk, left)
                f.write(os.urandom(n))
                left -= n
    return sha256_file(out), os.path.getsize(out)


def manifest(config_digest, config_size, layer_digest, layer_size, platforms):
    print(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.hashicorp.terraform-provider.config.v1+json",
            "digest": config_digest,
            "size": int(config_size),
        },
        "layers": [{
            "mediaType": "application/vnd.hashicorp.terraform.provider-package+zip",
            "digest": layer_digest,
            "size": int(layer_size),
            "annotations": {"io.terraform.target-platforms": platforms},
        }],
    }, separators=(",", ":")))


def json_archive_url(path, platform):
    with open(path) as f:
        print(json.load(f)["archives"][platform]["url"])


def origin_counts(log, from_line):
    counts = {}
    with open(log, errors="replace") as f:
        for i, line in enumerate(f):
            if i < int(from_line):
                continue
            m = re.search(r'"(GET|HEAD) (/v2/[^ ?"]+)[^"]* HTTP/[0-9.]+"', line)
            if m:
                key = m.group(1) + " " + m.group(2)
                counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    worst = max(counts.values()) if counts else 0
    detail = "; ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
    print(f"{total}\t{worst}\t{len(counts)}\t{detail}")


def static_version(ours_json, ours_url, typ, version):
    with open(ours_json) as f:
        doc = json.load(f)
    for platform, a in doc["archives"].items():
        name = f"terraform-provider-{typ}_{version}_{platform}.zip"
        print(urljoin(ours_url, a["url"]), name, file=sys.stderr)
        a["url"] = name
    print(json.dumps(doc, separators=(",", ":")))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        free_port()
    elif cmd == "make-zip":
        if len(args) == 4 and args[3] != "sh":
            sys.exit(f"make-zip: unknown option {args[3]}")
        print(*make_zip(*args[:3], stub=args[3:] == ["sh"]))
    elif cmd == "manifest":
        manifest(*args)
    elif cmd == "json-archive-url":
        json_archive_url(*args)
    elif cmd == "origin-counts":
        origin_counts(*args)
    elif cmd == "static-version":
        static_version(*args)
    elif cmd == "median":
        print(statistics.median(float(x) for x in args))
    elif cmd == "median-time":
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
        ms = []
        for t in args:
            m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", t)
            if not m:
                sys.exit(f"median-time: not a wrk latency: {t}")
            ms.append(float(m.group(1)) * scale[m.group(2)])
        print(f"{statistics.median(ms):.2f}ms")
    elif cmd == "min":
        print(min(float(x) for x in args))
    elif cmd == "max":
        print(max(float(x) for x in args))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
