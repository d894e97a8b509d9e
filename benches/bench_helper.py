#!/usr/bin/env python3
"""Small helpers for benches/package_bench.sh (standard library only).

  free-port                      print a TCP port free on 127.0.0.1 a moment ago
  make-zip OUT SIZE NAME         write a provider zip of ~SIZE bytes: one stored (uncompressed)
                                 executable NAME of random bytes; prints "sha256hex size"
  manifest CONFIG_DIGEST CONFIG_SIZE LAYER_DIGEST LAYER_SIZE PLATFORMS
                                 print the seed-layout OCI image manifest
  json-archive-url FILE PLATFORM print archives[PLATFORM].url of a VERSION.json
  median X...                    print the median of the numbers
  max X...                       print the largest of the numbers
"""
import hashlib
import json
import os
import socket
import statistics
import sys
import zipfile


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def make_zip(out, size, name):
    size = int(size)
    chunk = 8 << 20
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o100755 << 16
        info.compress_type = zipfile.ZIP_STORED
        with z.open(info, "w", force_zip64=size >= (1 << 31)) as f:
            left = size
            while left > 0:
                n = min(chunk, left)
                f.write(os.urandom(n))
                left -= n
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    print(h.hexdigest(), os.path.getsize(out))


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


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        free_port()
    elif cmd == "make-zip":
        make_zip(*args)
    elif cmd == "manifest":
        manifest(*args)
    elif cmd == "json-archive-url":
        json_archive_url(*args)
    elif cmd == "median":
        print(statistics.median(float(x) for x in args))
    elif cmd == "max":
        print(max(float(x) for x in args))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
