"""Benchmark of virtfleet.libvirt.guest_disk (issue 4).

1. Root overlay on a 10 GiB base: the module's own work per disk (ensure_disk in-process, i.e. without
   Python/Ansible start-up), for a 10 GiB and a 64 MiB base, to show it does not depend on the base's
   size; and the same through the real module (a subprocess per disk, as Ansible runs it).
2. 20 ephemeral disks (ext4, label ephemeral0) from one cached formatted base, versus formatting a
   fresh file 20 times (what building each disk without the cache costs).

Run as root from the checkout: .venv/bin/python bench/guest_disk_bench.py [--size 1G] [--count 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import core as disks  # noqa: E402
from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import mkfs  # noqa: E402
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import parse_size  # noqa: E402
from tests.support.runner import run_module  # noqa: E402


def ms(seconds: float) -> str:
    return "%.1f ms" % (seconds * 1000)


def make_base(instances: str, name: str, size: int) -> str:
    base_dir = os.path.join(instances, "_base")
    os.makedirs(base_dir, exist_ok=True)
    path = os.path.join(base_dir, name)
    with open(path, "wb") as handle:
        handle.truncate(size)
    with open(path + ".info.json", "w") as handle:
        json.dump({"format": "raw"}, handle)
    return path


def time_call(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def root_overlays(instances: str, count: int) -> dict:
    out = {}
    for label, size in (("10GiB", 10 << 30), ("64MiB", 64 << 20)):
        base = make_base(instances, "base-" + label, size)
        create, noop = [], []
        for i in range(count):
            params = {"guest": "root-%s-%d" % (label, i), "instances_path": instances, "kind": "root", "base": base,
                      "size": "20G", "state": "present"}
            create.append(time_call(lambda: disks.ensure_disk(dict(params), check_mode=False)))
            noop.append(time_call(lambda: disks.ensure_disk(dict(params), check_mode=False)))
        out[label] = {"create_median": statistics.median(create), "create_max": max(create),
                      "noop_median": statistics.median(noop)}
    base = os.path.join(instances, "_base", "base-10GiB")
    module = []
    for i in range(5):
        args = {"guest": "mod-%d" % i, "instances_path": instances, "kind": "root", "base": base, "size": "20G"}
        module.append(time_call(lambda: run_module("guest_disk", args)))
    out["module_subprocess_median"] = statistics.median(module)
    return out


def ephemerals(instances: str, count: int, size: int, fs_type: str) -> dict:
    cached = []
    for i in range(count):
        params = {"guest": "eph-%d" % i, "instances_path": instances, "kind": "ephemeral", "size": str(size),
                  "fs_type": fs_type, "state": "present"}
        cached.append(time_call(lambda: disks.ensure_disk(dict(params), check_mode=False)))
    scratch = os.path.join(instances, "mkfs-each")
    os.makedirs(scratch)
    fresh = []
    for i in range(count):
        path = os.path.join(scratch, "eph-%d" % i)
        fresh.append(time_call(lambda: mkfs.make_filesystem(path, size, fs_type, "ephemeral0")))
    used_cached = sum(os.stat(os.path.join(instances, "eph-%d" % i, "disk.local")).st_blocks * 512
                      for i in range(count))
    used_fresh = sum(os.stat(os.path.join(scratch, n)).st_blocks * 512 for n in os.listdir(scratch))
    return {"cached_total": sum(cached), "cached_first": cached[0], "cached_rest_median": statistics.median(cached[1:]),
            "mkfs_total": sum(fresh), "mkfs_median": statistics.median(fresh),
            "disk_bytes_cached": used_cached, "disk_bytes_mkfs": used_fresh}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", default="1G", help="ephemeral disk size")
    parser.add_argument("--fs", default="ext4", choices=["ext4", "xfs", "vfat"], help="ephemeral filesystem")
    parser.add_argument("--root", default="/var/lib/virtfleet-test")
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-guest-disk-", dir=args.root)
    instances = os.path.join(work, "instances")
    os.makedirs(instances)
    try:
        roots = root_overlays(instances, args.count)
        eph = ephemerals(instances, args.count, parse_size(args.size), args.fs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("root overlay, module work per disk (in-process ensure_disk, %d disks):" % args.count)
    for label in ("10GiB", "64MiB"):
        r = roots[label]
        print("  base %-6s create median %s (max %s), unchanged re-run median %s"
              % (label, ms(r["create_median"]), ms(r["create_max"]), ms(r["noop_median"])))
    print("  whole module as a subprocess (Python + AnsibleModule start-up included): median %s"
          % ms(roots["module_subprocess_median"]))
    print("%d ephemeral %s disks of %s:" % (args.count, args.fs, args.size))
    print("  from one cached formatted base: total %s (first, incl. mkfs of the base: %s; others median %s); "
          "%.1f MiB allocated" % (ms(eph["cached_total"]), ms(eph["cached_first"]), ms(eph["cached_rest_median"]),
                                  eph["disk_bytes_cached"] / 1048576.0))
    print("  mkfs." + args.fs + " on a fresh file each time: total %s (median %s); %.1f MiB allocated"
          % (ms(eph["mkfs_total"]), ms(eph["mkfs_median"]), eph["disk_bytes_mkfs"] / 1048576.0))


if __name__ == "__main__":
    main()
