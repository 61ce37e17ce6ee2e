"""Benchmark (issue 12): the fleet roles' one call per hypervisor vs a shell loop and vs one stat task.

For N guests (default 5, 20 and 50) of 1 vCPU and 128 MiB, in two columns: a blank, non-booting root disk (the
guest sits in the firmware: the tool's own cost shows) and the booting test guest (fw_cfg mode ``stay``):

1. first boot, batch: ``playbooks/boot.yml`` (one ``guest`` module call for all N guests: image, disks, domain
   XML, domain) vs a bash loop doing ``qemu-img create`` + ``virsh define`` + ``virsh start`` per guest, five guests
   at a time (``xargs -P 5``; its domain XML files are written beforehand, untimed). Target <= 1.0x.
2. idempotent re-run, batch: the same playbook again vs a playbook of one ``ansible.builtin.stat`` task on one
   host (the whole ``ansible-playbook`` process). Target <= 2x.
3. the per-guest path (``boot_batch: false``: one call per guest and module), first boot and re-run, beside.

Forks 5 everywhere; re-runs and the stat baseline are medians of ``--rounds``; first boots are one run each
(``--boot-rounds`` to repeat: every repetition removes and rebuilds the guests). Every domain and file the
run makes is removed at the end, even on failure.

4. with ``--resize`` (batch only): ``playbooks/resize.yml`` growing every guest live by one vCPU vs one stat task
   per guest, and its re-run.

Usage (root, libvirtd on qemu:///system):
  .venv/bin/python bench/fleet_bench.py [--sizes 5,20,50] [--columns blank,boot] [--rounds 3] [--no-per-guest]
      [--resize] [--batch-concurrency N] [--output FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from boot_bench import (  # noqa: E402  pylint: disable=wrong-import-position
    TIMER_CALLBACK, URI, _interrupt, build_image, cleanup, image_server, profile, run_module, running_count, sh,
    snapshot_collection, timed_playbook, write_inventory as write_boot_inventory,
)

BENCH_ROOT = "/var/lib/virtfleet-bench"
FLAVOR = "b.fleet"
FORKS = 5
WIDE = "b.wide"


def write_stat_playbook(path):
    with open(path, "w") as handle:
        handle.write("---\n- name: One stat task on one host\n  hosts: hv\n  gather_facts: false\n  tasks:\n"
                     "    - name: Stat\n      ansible.builtin.stat:\n        path: /var/lib\n")
    return path


def shell_boot(prefix, run_dir, base, base_format, n, args, mode):
    """Seconds for the xargs -P 5 loop to create, define and start n guests (XML written beforehand)."""
    instances = os.path.join(run_dir, "shell")
    os.makedirs(instances, exist_ok=True)
    os.chmod(instances, 0o755)
    names = ["%ssh-%02d" % (prefix, i) for i in range(n)]
    lines = []
    for name in names:
        disk = os.path.join(instances, name, "disk")
        fw_cfg = {"opt/org.virtfleet/mode": mode} if mode else None
        xml = run_module("domain_xml", dict({
            "name": name, "vcpus": 1, "memory": args.memory, "virt_type": "qemu", "instances_path": instances,
            "disks": [{"path": disk, "format": "qcow2", "boot_order": 1}]}, **({"fw_cfg": fw_cfg} if fw_cfg else {})))
        if xml["_rc"] != 0:
            raise RuntimeError("domain_xml failed: %s" % xml.get("msg"))
        lines.append("%s %s %s" % (name, disk, xml["path"]))
    script = os.path.join(run_dir, "one-guest.sh")
    with open(script, "w") as handle:
        handle.write("set -euo pipefail\nname=$1 disk=$2 xml=$3\n"
                     "qemu-img create -q -f qcow2 -F %s -b %s \"$disk\" %s\n"
                     "virsh -q -c %s define \"$xml\" >/dev/null\n"
                     "virsh -q -c %s start \"$name\" >/dev/null\n" % (base_format, base, args.disk, URI, URI))
    listing = os.path.join(run_dir, "guests.txt")
    with open(listing, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    start = time.monotonic()
    proc = subprocess.run("xargs -P %d -L 1 bash %s < %s" % (FORKS, script, listing), shell=True,
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError("shell loop failed: %s" % proc.stderr[-2000:])
    running = running_count(prefix + "sh-")
    cleanup(prefix + "sh-", instances)
    return elapsed, running


def role_runs(prefix, run_dir, playbook, stat_book, column, n, batch, args, out):
    """First boot(s) and re-runs of the boot playbook for n guests, batch or per guest; fills ``out``."""
    tag = "%s%s-%s-%d-" % (prefix, "b" if batch else "p", column["name"][:2], n)
    instances = os.path.join(run_dir, tag.rstrip("-"))
    names = ["%s%02d" % (tag, i) for i in range(n)]
    inventory = write_boot_inventory(os.path.join(run_dir, tag + "inventory.json"), names, dict(column["vars"], **{
        "virtfleet_instances_path": instances, "boot_batch": batch,
        # max_vcpus leaves room for --resize to grow every guest live
        "virtfleet_flavors": {FLAVOR: {"vcpus": 1, "max_vcpus": 2, "memory": args.memory, "disk": args.disk},
                              WIDE: {"vcpus": 2, "max_vcpus": 2, "memory": args.memory, "disk": args.disk}}}),
        flavor=FLAVOR)
    firsts = []
    for round_ in range(args.boot_rounds):
        os.makedirs(instances, exist_ok=True)
        os.chmod(instances, 0o755)
        elapsed, run = timed_playbook(playbook, inventory, "boot %s" % tag, run_dir)
        firsts.append(round(elapsed, 2))
        out.setdefault("boot_profile", profile(run.stdout, elapsed))
        out["running_after_boot"] = running_count(tag)
        if round_ + 1 < args.boot_rounds:
            cleanup(tag, instances)
    reruns, changed = [], []
    stats = []
    for _round in range(args.rounds):
        elapsed, run = timed_playbook(playbook, inventory, "re-run %s" % tag, run_dir)
        reruns.append(round(elapsed, 2))
        changed.append(run.changed())
        out.setdefault("rerun_profile", profile(run.stdout, elapsed))
        elapsed, _run = timed_playbook(stat_book, inventory, "stat", run_dir)
        stats.append(round(elapsed, 2))
    out.update(first_boot_s=firsts, first_boot_median_s=statistics.median(firsts), rerun_s=reruns,
               rerun_median_s=statistics.median(reruns), rerun_changed=changed, stat_s=stats,
               stat_median_s=statistics.median(stats))
    if args.resize and batch:
        resize_run(run_dir, playbook, names, inventory, out)
    cleanup(tag, instances)


def resize_run(run_dir, playbook, names, inventory, out):
    """Issue 11's role figure: playbooks/resize.yml grows every guest live (one more vCPU) vs as many stat tasks."""
    with open(inventory) as handle:
        data = json.load(handle)
    for name in names:
        data["all"]["children"]["guests"]["hosts"][name]["virtfleet_flavor"] = WIDE
    wide = inventory.replace(".json", "-wide.json")
    with open(wide, "w") as handle:
        json.dump(data, handle)
    resize_book = os.path.join(os.path.dirname(playbook), "resize.yml")
    elapsed, run = timed_playbook(resize_book, wide, "resize", run_dir)
    out["resize"] = {"guests": len(names), "seconds": round(elapsed, 2), "changed": run.changed(),
                     "live": len(re.findall(r"resized live \(", run.stdout)),
                     "profile": profile(run.stdout, elapsed)}
    stat_book = os.path.join(run_dir, "stat-per-guest.yml")
    with open(stat_book, "w") as handle:
        handle.write("---\n- name: One stat task per guest\n  hosts: guests\n  gather_facts: false\n  tasks:\n"
                     "    - name: Stat\n      ansible.builtin.stat:\n        path: /var/lib\n"
                     "      delegate_to: hv\n")
    stats = [round(timed_playbook(stat_book, wide, "stat per guest", run_dir)[0], 2) for _round in range(3)]
    out["resize"].update(stat_per_guest_s=stats, ratio=round(elapsed / statistics.median(stats), 2))
    elapsed, run = timed_playbook(resize_book, wide, "resize again", run_dir)
    out["resize"].update(rerun_s=round(elapsed, 2), rerun_changed=run.changed())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20,50")
    parser.add_argument("--columns", default="blank,boot")
    parser.add_argument("--memory", default="128M")
    parser.add_argument("--disk", default="64M")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each re-run and of the stat baseline")
    parser.add_argument("--boot-rounds", type=int, default=1, help="first boots per case (median)")
    parser.add_argument("--batch-concurrency", type=int, default=None,
                        help="the roles' batch_concurrency (virtfleet_batch_concurrency); default: the roles' own")
    parser.add_argument("--no-per-guest", action="store_true", help="leave out the per-guest path")
    parser.add_argument("--resize", action="store_true", help="also time playbooks/resize.yml growing the batch's "
                        "guests live, against one stat task per guest")
    parser.add_argument("--image-dir", default=os.path.join(os.environ.get("VIRTFLEET_TEST_ROOT",
                                                                           "/var/lib/virtfleet-test"), "guest-image"))
    parser.add_argument("--output", default=os.path.join(BENCH_ROOT, "results", "fleet_bench-%s.json"
                                                         % time.strftime("%Y%m%dT%H%M%S")))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark defines domains on %s" % URI)
    sizes = [int(s) for s in args.sizes.split(",")]
    token = uuid.uuid4().hex[:6]
    prefix = "vff-%s-" % token
    os.makedirs(BENCH_ROOT, exist_ok=True)
    os.chmod(BENCH_ROOT, 0o755)
    run_dir = os.path.join(BENCH_ROOT, "run-" + token)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    results = {"sizes": sizes, "batch_concurrency": args.batch_concurrency, "memory": args.memory, "disk": args.disk,
               "forks": FORKS, "cpus": os.cpu_count(), "rounds": args.rounds, "boot_rounds": args.boot_rounds,
               "cases": []}
    try:
        os.makedirs(os.path.join(run_dir, "www"))
        os.chmod(run_dir, 0o755)
        images = {}
        if "boot" in args.columns:
            shutil.copyfile(build_image(args.image_dir), os.path.join(run_dir, "www", "guest.img"))
            images["boot"] = "guest.img"
        if "blank" in args.columns:
            with open(os.path.join(run_dir, "www", "blank.img"), "wb") as handle:
                handle.truncate(1 << 20)  # zeros: no boot sector, the firmware finds nothing to boot
            images["blank"] = "blank.img"
        os.makedirs(os.path.join(run_dir, "callbacks"))
        with open(os.path.join(run_dir, "callbacks", "vf_bench_timer.py"), "w") as handle:
            handle.write(TIMER_CALLBACK)
        _collections, playbook = snapshot_collection(run_dir)
        os.environ["ANSIBLE_FORKS"] = str(FORKS)  # over the repository's ansible.cfg the runner points at
        stat_book = write_stat_playbook(os.path.join(run_dir, "stat.yml"))
        with image_server(os.path.join(run_dir, "www")) as base_url:
            for name in args.columns.split(","):
                path = os.path.join(run_dir, "www", images[name])
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                mode = "stay" if name == "boot" else None
                column = {"name": name, "vars": {
                    "virtfleet_hypervisor": "hv", "virtfleet_image_url": "%s/%s" % (base_url, images[name]),
                    "virtfleet_image_checksum": "sha256:" + digest, "virtfleet_image_format": "raw",
                    "virtfleet_virt_type": "qemu", "virtfleet_fw_cfg": {"opt/org.virtfleet/mode": mode} if mode
                    else {}}}
                if args.batch_concurrency:
                    column["vars"]["virtfleet_batch_concurrency"] = args.batch_concurrency
                for n in sizes:
                    case = {"column": name, "guests": n}
                    results["cases"].append(case)
                    case["shell_s"], case["shell_running"] = shell_boot(prefix, run_dir, path, "raw", n, args, mode)
                    case["batch"] = {}
                    role_runs(prefix, run_dir, playbook, stat_book, column, n, True, args, case["batch"])
                    if not args.no_per_guest:
                        case["per_guest"] = {}
                        role_runs(prefix, run_dir, playbook, stat_book, column, n, False, args, case["per_guest"])
    except (Exception, KeyboardInterrupt) as exc:  # keep the figures measured so far
        results["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        cleanup(prefix, run_dir)
        leftovers = [n for n in sh(["virsh", "-c", URI, "list", "--all", "--name"]).stdout.split()
                     if n.startswith(prefix)]
        results["cleanup"] = {"domains_left": leftovers, "run_dir_left": os.path.exists(run_dir)}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(results, handle, indent=1)
    report(results)
    print("\nresults: %s" % args.output)
    if "error" in results:
        print("\nFAILED: %s" % results["error"][-6000:])
        return 1
    return 0


def report(results):
    print("\nfleet_bench: 1 vCPU, %s, TCG, forks %d, %s cores; re-runs and stat: medians of %d"
          % (results["memory"], results["forks"], results["cpus"], results["rounds"]))
    header = ("column", "N", "shell", "batch boot", "ratio", "per-guest boot", "batch re-run", "stat",
              "ratio", "per-guest re-run", "batch boot/guest")
    print("  ".join("%-16s" % h if i in (0,) else "%10s" % h for i, h in enumerate(header)))
    for case in results["cases"]:
        batch, per = case.get("batch") or {}, case.get("per_guest") or {}
        if "rerun_median_s" not in batch:
            continue
        row = [case["column"], case["guests"], "%.1f" % case["shell_s"], "%.1f" % batch["first_boot_median_s"],
               "%.2fx" % (batch["first_boot_median_s"] / case["shell_s"]),
               "%.1f" % per["first_boot_median_s"] if per.get("first_boot_median_s") else "-",
               "%.1f" % batch["rerun_median_s"], "%.1f" % batch["stat_median_s"],
               "%.2fx" % (batch["rerun_median_s"] / batch["stat_median_s"]),
               "%.1f" % per["rerun_median_s"] if per.get("rerun_median_s") else "-",
               "%.2f" % (batch["first_boot_median_s"] / case["guests"])]
        print("  ".join("%-16s" % v if i == 0 else "%10s" % v for i, v in enumerate(row)))
        print("  %s re-run changed=%s, running after boot %s (shell %s)" % (
            " " * 14, batch["rerun_changed"], batch.get("running_after_boot"), case["shell_running"]))
        if batch.get("resize"):
            r = batch["resize"]
            print("  %s resize.yml, %d guests live %d: %.1f s vs %d stat tasks %.1f s (%.2fx); changed %d; again "
                  "%.1f s changed %d" % (" " * 14, r["guests"], r["live"], r["seconds"], r["guests"],
                                         statistics.median(r["stat_per_guest_s"]), r["ratio"], r["changed"],
                                         r["rerun_s"], r["rerun_changed"]))
    print("targets: batch first boot <= 1.0x shell; batch re-run <= 2x one stat task")
    cleaned = results["cleanup"]
    print("cleanup: domains left %s, run dir left %s" % (cleaned["domains_left"], cleaned["run_dir_left"]))


if __name__ == "__main__":
    sys.exit(main())
