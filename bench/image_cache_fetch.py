"""Benchmark: fetch a 1 GiB image from a loopback HTTP server with sha256 verification.

Compares ``virtfleet.libvirt.image_cache`` (one pass: hash while streaming, fsync, rename) with
``curl -o`` followed by ``sha256sum`` (two passes), and times a cached re-run, both as a module
process and as the module's own work (``ensure_image`` in-process). Not a test: prints figures.

Usage: .venv/bin/python bench/image_cache_fetch.py [--size-mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

from tests.support.runner import run_module  # noqa: E402

SCRATCH = os.environ.get("VIRTFLEET_TEST_ROOT", "/var/lib/virtfleet-test")


def make_image(path: str, size: int) -> str:
    """Incompressible data (a worst case for hashing), written once; returns its sha256."""
    hasher = hashlib.sha256()
    block = os.urandom(16 << 20)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            handle.write(piece)
            hasher.update(piece)
            written += len(piece)
    return hasher.hexdigest()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("the benchmark HTTP server did not start")


def timed(func):
    started = time.monotonic()
    value = func()
    return time.monotonic() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    size = opts.size_mib << 20
    root = os.path.join(SCRATCH, "bench-image-cache-" + uuid.uuid4().hex[:8])
    www = os.path.join(root, "www")
    os.makedirs(www)
    server = None
    try:
        digest = make_image(os.path.join(www, "bench.raw"), size)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www,
                                   str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(port)
        url = "http://127.0.0.1:%d/bench.raw" % port
        ours, ours_internal, theirs, theirs_sync, cached, cached_internal = [], [], [], [], [], []
        for round_no in range(opts.rounds):
            instances = os.path.join(root, "instances-%d" % round_no)
            args = {"url": url, "checksum": "sha256:" + digest, "instances_path": instances, "cache_format": "raw"}
            seconds, result = timed(lambda: run_module("image_cache", args))
            if result.get("failed"):
                raise SystemExit("image_cache failed: %s" % result.get("msg"))
            ours.append(seconds)
            ours_internal.append(result["seconds"])

            out = os.path.join(root, "curl-%d.raw" % round_no)

            def curl_then_sum(sync: bool) -> str:
                subprocess.run(["curl", "-sS", "-f", "-o", out, url], check=True)
                if sync:
                    subprocess.run(["sync", out], check=True)
                return subprocess.run(["sha256sum", out], check=True, capture_output=True,
                                      text=True).stdout.split()[0]

            seconds, got = timed(lambda: curl_then_sum(False))
            if got != digest:
                raise SystemExit("curl download mismatch")
            theirs.append(seconds)
            os.unlink(out)
            seconds, got = timed(lambda: curl_then_sum(True))
            theirs_sync.append(seconds)
            os.unlink(out)

            seconds, again = timed(lambda: run_module("image_cache", args))
            if again.get("changed") or again.get("fetched"):
                raise SystemExit("the re-run was not served from the cache: %s" % again)
            cached.append(seconds)
            from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.cache import image_cache_core

            params = dict(args, state="present", verify="quick", max_virtual_size="1T", timeout=60, retries=0)
            seconds, again = timed(lambda: image_cache_core(params, False))
            cached_internal.append(seconds)
            shutil.rmtree(instances)

        def fmt(values):
            return "median %.3f s (min %.3f, max %.3f)" % (statistics.median(values), min(values), max(values))

        print("image: %d MiB, sha256 verified, %d rounds, loopback http.server" % (opts.size_mib, opts.rounds))
        print("image_cache fetch (module process, fsync'ed):   %s" % fmt(ours))
        print("  transfer as reported by the module:            %s  (%.0f MiB/s)"
              % (fmt(ours_internal), size / statistics.median(ours_internal) / (1 << 20)))
        print("curl -o + sha256sum (no fsync):                  %s" % fmt(theirs))
        print("curl -o + sync + sha256sum:                      %s" % fmt(theirs_sync))
        print("ratio curl+sha256sum / image_cache:              %.2fx (with sync: %.2fx)"
              % (statistics.median(theirs) / statistics.median(ours),
                 statistics.median(theirs_sync) / statistics.median(ours)))
        print("cached re-run, module process:                   %s" % fmt(cached))
        print("cached re-run, module's work (image_cache_core):     median %.2f ms (max %.2f ms)"
              % (statistics.median(cached_internal) * 1000, max(cached_internal) * 1000))
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
