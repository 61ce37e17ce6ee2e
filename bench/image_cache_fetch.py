"""Benchmark: fetch a mostly empty raw image from a loopback HTTP server with sha256 verification.

Issue 10 item 15. Side by side in one run, alternating, so that the noisy host affects both alike:

* ``floor``: a single-pass Python download (``urllib``, 1 MiB reads) hashed with sha256 as it arrives and
  written to a file: the least any downloader written in Python can do (no fsync; a second variant with
  one fsync at the end is shown too);
* ``image_cache``: the module's own work (its core, in this process, as ``run_core`` calls it): download,
  hash, write sparse, inspect, sync once, record, rename; and the whole module process as Ansible runs it.

Also: the cached file's allocation against the image's non-zero data, and a cached re-run. The image
is ``--size-mib`` (1024) of which ``--data-mib`` (200) random, the rest zeros. Not a test: prints
figures and writes them as JSON next to the run directory (``--output``).

Usage: .venv/bin/python bench/image_cache_fetch.py [--size-mib 1024] [--data-mib 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

from tests.support.runner import run_module  # noqa: E402

SCRATCH = os.environ.get("VIRTFLEET_TEST_ROOT", "/var/lib/virtfleet-test")
MiB = 1 << 20
TARGET_RATIO = 1.15
ALLOCATION_SLACK = 4 * MiB


def make_image(path: str, size: int, data: int) -> str:
    """A sparse raw file of ``size`` bytes with ``data`` random bytes in four stretches; returns its sha256."""
    stretch = data // 4
    starts = [0, size // 4, size // 2, size - stretch]
    with open(path, "wb") as handle:
        handle.truncate(size)
        for start in starts:
            handle.seek(start)
            left = stretch
            while left:
                piece = os.urandom(min(left, 16 * MiB))
                handle.write(piece)
                left -= len(piece)
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * MiB), b""):
            hasher.update(block)
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


def floor_download(url: str, out: str, sync: bool) -> str:
    """The floor: one pass, urllib 1 MiB reads, sha256 as the bytes arrive, every byte written."""
    hasher = hashlib.sha256()
    with urllib.request.urlopen(url) as response, open(out, "wb") as handle:
        while True:
            chunk = response.read(MiB)
            if not chunk:
                break
            hasher.update(chunk)
            handle.write(chunk)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    return hasher.hexdigest()


def settle() -> None:
    """Write back what the previous step left dirty, outside every timer."""
    os.sync()
    time.sleep(0.5)


def timed(func):
    started = time.monotonic()
    value = func()
    return time.monotonic() - started, value


def median(values):
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=None)
    opts = parser.parse_args()
    size, data = opts.size_mib * MiB, opts.data_mib * MiB
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.cache import image_cache_core

    root = os.path.join(SCRATCH, "bench-image-cache-" + uuid.uuid4().hex[:8])
    www = os.path.join(root, "www")
    os.makedirs(www)
    server = None
    figures = {"floor": [], "floor_fsync": [], "core": [], "module": [], "cached_module": [], "cached_core": [],
               "allocated": [], "core_actual_size": []}
    try:
        digest = make_image(os.path.join(www, "bench.raw"), size, data)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www,
                                   str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(port)
        url = "http://127.0.0.1:%d/bench.raw" % port
        floor_out = os.path.join(root, "floor.raw")
        for round_no in range(opts.rounds):
            settle()
            seconds, got = timed(lambda: floor_download(url, floor_out, sync=False))
            if got != digest:
                raise SystemExit("floor download mismatch")
            figures["floor"].append(seconds)
            os.unlink(floor_out)
            settle()

            instances = os.path.join(root, "core-%d" % round_no)
            params = {"url": url, "checksum": "sha256:" + digest, "instances_path": instances, "cache_format": "raw",
                      "retries": 0}
            seconds, result = timed(lambda: image_cache_core(params, check_mode=False))
            if not result["fetched"]:
                raise SystemExit("image_cache_core did not fetch: %s" % result)
            figures["core"].append(seconds)
            figures["allocated"].append(os.stat(result["path"]).st_blocks * 512)
            figures["core_actual_size"].append(result["actual_size"])
            seconds, again = timed(lambda: image_cache_core(params, check_mode=False))
            if again["changed"] or again["fetched"]:
                raise SystemExit("the re-run was not served from the cache: %s" % again)
            figures["cached_core"].append(seconds)
            shutil.rmtree(instances)
            settle()

            seconds, got = timed(lambda: floor_download(url, floor_out, sync=True))
            figures["floor_fsync"].append(seconds)
            os.unlink(floor_out)
            settle()

            instances = os.path.join(root, "module-%d" % round_no)
            args = dict(params, instances_path=instances)
            seconds, result = timed(lambda: run_module("image_cache", args))
            if result.get("failed") or not result.get("fetched"):
                raise SystemExit("image_cache failed: %s" % result.get("msg"))
            figures["module"].append(seconds)
            seconds, again = timed(lambda: run_module("image_cache", args))
            if again.get("changed") or again.get("fetched"):
                raise SystemExit("the module re-run was not served from the cache: %s" % again)
            figures["cached_module"].append(seconds)
            shutil.rmtree(instances)

        def fmt(values):
            return "median %.3f s (min %.3f, max %.3f)" % (median(values), min(values), max(values))

        ratio = median(figures["core"]) / median(figures["floor"])
        allocated = max(figures["allocated"])
        summary = {
            "size_mib": opts.size_mib, "data_mib": opts.data_mib, "rounds": opts.rounds,
            "floor_s": median(figures["floor"]), "floor_fsync_s": median(figures["floor_fsync"]),
            "core_s": median(figures["core"]), "module_s": median(figures["module"]),
            "ratio_core_vs_floor": round(ratio, 3),
            "ratio_core_vs_floor_fsync": round(median(figures["core"]) / median(figures["floor_fsync"]), 3),
            "allocated_bytes": allocated, "data_bytes": data,
            "cached_rerun_core_ms": round(median(figures["cached_core"]) * 1000, 2),
            "cached_rerun_module_s": median(figures["cached_module"]), "samples": figures,
        }
        print("image: %d MiB raw (%d MiB random, the rest zeros), sha256 verified, %d rounds, loopback http.server"
              % (opts.size_mib, opts.data_mib, opts.rounds))
        print("floor: urllib + sha256 + write (one pass):     %s" % fmt(figures["floor"]))
        print("floor with one fsync at the end:               %s" % fmt(figures["floor_fsync"]))
        print("image_cache, module's work (core in process):  %s" % fmt(figures["core"]))
        print("image_cache, module process:                   %s" % fmt(figures["module"]))
        print("ratio module work / floor:                     %.2fx (target <= %.2fx); vs floor with fsync %.2fx"
              % (ratio, TARGET_RATIO, summary["ratio_core_vs_floor_fsync"]))
        print("cached file allocation:                        %.1f MiB for %.1f MiB of non-zero data (target <= "
              "+%d MiB)" % (allocated / MiB, data / MiB, ALLOCATION_SLACK // MiB))
        print("cached re-run: module's work %.2f ms, module process %.3f s"
              % (summary["cached_rerun_core_ms"], summary["cached_rerun_module_s"]))
        output = opts.output or os.path.join(SCRATCH, "bench-results",
                                             "image_cache_fetch-%s.json" % time.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(os.path.dirname(output), exist_ok=True)
        with open(output, "w") as handle:
            json.dump(summary, handle, indent=2)
        print("figures written to %s" % output)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
