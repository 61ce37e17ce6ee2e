"""Benchmark (issue 11): downtime of a live vs a cold resize, from the guest's own heartbeat; cold overhead.

One test guest (tests/guest) in stay mode with its heartbeat (one ``VFBEAT`` line a second on its serial
console, timestamped by the host as the lines appear; tests/support/heartbeat.py), built as the boot role
builds guests (guest_disk root overlay and a blank data disk, domain_xml with headroom, domain).

1. ``live``: vm_resize 1 -> 2 vCPUs, 256M -> 384M (a DIMM), root 64M -> 96M. Downtime = the longest gap
   between two beats during the resize, less the one-second beat interval.
2. ``cold`` vs ``restart``, alternated for ``--rounds``: vm_resize with ``mode: cold`` (vCPUs 2 <-> 3, the
   data disk 32 MiB larger each round: shutdown, backup, grow, redefine, domain.xml, start) against a plain
   restart of the same guest through libvirt (ACPI shutdown, wait until off, start). Both gaps run from the
   last beat before the guest went down to the first beat after it came back, so both contain the same
   shutdown and boot; their difference is what a cold resize costs beyond shutdown + boot. Target <= 1 s.

3. ``--fleet N``: N such guests resized live to 2 vCPUs and 384M by a playbook with one vm_resize task per
   guest (delegated to the hypervisor, as a per-guest role does), then to 512M by one vm_resize call with
   ``items`` for all of them (the per-hypervisor form), then the per-guest playbook again with nothing to
   change; against a playbook with one ``ansible.builtin.stat`` task per guest (same inventory, forks = N).

Usage (root, libvirtd on qemu:///system), under the integration lock:
  flock /work/integration.lock .venv/bin/python bench/resize_bench.py [--rounds 3] [--fleet 20] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

import libvirt  # noqa: E402

from tests.support.guest_report import latest_complete  # noqa: E402
from tests.support.heartbeat import HeartbeatMonitor  # noqa: E402
from tests.support.runner import run_module, run_playbook  # noqa: E402

BENCH_ROOT = "/var/lib/virtfleet-bench"
BEAT_INTERVAL = 1.0


def check(result, what):
    if result.get("_rc") != 0 or result.get("failed"):
        raise SystemExit("%s failed: %s" % (what, result.get("msg") or result))
    return result


def build_image(image_dir):
    proc = subprocess.run(["bash", os.path.join(REPO, "tests", "guest", "build-image.sh"), image_dir],
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit("building the test guest failed:\n%s%s" % (proc.stdout, proc.stderr))
    return os.path.join(image_dir, "virtfleet-test-guest.img")


def wait_report(console, predicate, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(console, "rb") as handle:
                report = latest_complete(handle.read().decode("utf-8", "replace"))
        except FileNotFoundError:
            report = None
        if report is not None and predicate(report):
            return report
        time.sleep(0.2)
    raise SystemExit("no matching report in %s" % console)


def boot_guest(instances, name, image):
    disks = []
    for args in ({"kind": "root", "size": "64M", "base": image, "base_format": "raw"},
                 {"kind": "blank", "size": "64M"}):
        made = check(run_module("guest_disk", dict(args, guest=name, format="qcow2", instances_path=instances)),
                     "guest_disk")
        disks.append(made["xml_disk"])
    disks[0]["boot_order"] = 1
    check(run_module("domain_xml", {"name": name, "virt_type": "qemu", "vcpus": 1, "memory": "256M", "headroom": True,
                                    "instances_path": instances, "disks": disks,
                                    "fw_cfg": {"opt/org.virtfleet/mode": "stay", "opt/org.virtfleet/heartbeat": "1"}}),
          "domain_xml")
    check(run_module("domain", {"name": name, "instances_path": instances}), "domain")


def gap_around(console, action, after_boot=None):
    """(longest heartbeat gap in seconds while ``action`` runs and the guest comes back, action's wall time,
    action's result)."""
    with HeartbeatMonitor(console) as beats:
        beats.wait_for_beats(2)
        boot = beats.beats[-1][1].boot
        started = time.monotonic()
        result = action()
        wall = time.monotonic() - started
        if after_boot:
            deadline = time.monotonic() + 180
            while not [b for _t, b in beats.beats if b.boot != boot] and time.monotonic() < deadline:
                time.sleep(0.05)
        count = len(beats.beats)
        beats.wait_for_beats(count + 2)
    return beats.longest_gap(), wall, result


def restart(dom):
    def run():
        dom.shutdown()
        while dom.state()[0] != libvirt.VIR_DOMAIN_SHUTOFF:
            time.sleep(0.05)
        dom.create()
    return run


PER_GUEST = """- hosts: guests
  gather_facts: false
  tasks:
    - name: Resize
      virtfleet.libvirt.vm_resize:
        name: "{{ inventory_hostname }}"
        instances_path: "{{ instances }}"
        vcpus: "{{ vcpus }}"
        memory: "{{ memory }}"
      delegate_to: hv
"""
PER_HYPERVISOR = """- hosts: hv
  gather_facts: false
  tasks:
    - name: Resize all guests of this hypervisor
      virtfleet.libvirt.vm_resize:
        items: "{{ groups['guests'] | map('community.general.dict_kv', 'name') | list }}"
        instances_path: "{{ instances }}"
        memory: "{{ memory }}"
        batch_concurrency: 8
"""
STAT = """- hosts: guests
  gather_facts: false
  tasks:
    - name: Stat
      ansible.builtin.stat:
        path: "{{ instances }}/{{ inventory_hostname }}/domain.xml"
      delegate_to: hv
"""


def fleet(root, instances, names, image, figures):
    """Boot the guests ``names``, then time resizing them by playbooks against stat tasks."""
    count = len(names)
    for name in names:
        boot_guest(instances, name, image)
    for name in names:
        wait_report(os.path.join(instances, name, "console.log"), lambda r: True, timeout=600)
    inventory = os.path.join(root, "inventory.json")
    with open(inventory, "w") as handle:
        json.dump({"all": {"vars": {"instances": instances},
                           "children": {"hypervisors": {"hosts": {"hv": {
                               "ansible_connection": "local",
                               "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}},
                               "guests": {"hosts": {name: {} for name in names}}}}}, handle)
    books = {}
    for label, text in (("per_guest", PER_GUEST), ("per_hypervisor", PER_HYPERVISOR.replace(
            "groups['guests'] | map('community.general.dict_kv', 'name') | list",
            json.dumps([{"name": n} for n in names]).replace('"', "'"))), ("stat", STAT)):
        books[label] = os.path.join(root, label + ".yml")
        with open(books[label], "w") as handle:
            handle.write(text)
    env = {"ANSIBLE_FORKS": str(count)}

    def timed(label, extra):
        started = time.monotonic()
        run = run_playbook(books[label], inventory, extra_vars=extra, env=env, timeout=1800)
        took = time.monotonic() - started
        if run.rc != 0:
            raise SystemExit("%s failed:\n%s" % (label, run.stdout[-3000:]))
        return took, run.changed()

    rows = {}
    rows["stat"] = timed("stat", {})
    rows["live_per_guest"] = timed("per_guest", {"vcpus": 2, "memory": "384M"})
    rows["live_items"] = timed("per_hypervisor", {"memory": "512M"})
    rows["rerun_per_guest"] = timed("per_guest", {"vcpus": 2, "memory": "512M"})
    rows["stat_again"] = timed("stat", {})
    for name in names:
        report = wait_report(os.path.join(instances, name, "console.log"), lambda r: r.cpus == 2, timeout=120)
        assert report.cpus == 2, name
    stat = statistics.mean([rows["stat"][0], rows["stat_again"][0]])
    figures["fleet"] = {"guests": count, **{k: {"seconds": round(v[0], 2), "changed": v[1]} for k, v in rows.items()},
                        "ratio_live_per_guest": round(rows["live_per_guest"][0] / stat, 2),
                        "ratio_live_items": round(rows["live_items"][0] / stat, 2),
                        "ratio_rerun": round(rows["rerun_per_guest"][0] / stat, 2)}
    print("fleet of %d: stat %.1f s / %.1f s; live resize per guest %.1f s (%.2fx, changed %d), with items %.1f s "
          "(%.2fx), re-run %.1f s (%.2fx, changed %d)" % (
              count, rows["stat"][0], rows["stat_again"][0], rows["live_per_guest"][0],
              figures["fleet"]["ratio_live_per_guest"], rows["live_per_guest"][1], rows["live_items"][0],
              figures["fleet"]["ratio_live_items"], rows["rerun_per_guest"][0], figures["fleet"]["ratio_rerun"],
              rows["rerun_per_guest"][1]), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fleet", type=int, default=0, help="also resize this many guests by playbooks")
    parser.add_argument("--image-dir", default=os.path.join(os.environ.get("VIRTFLEET_TEST_ROOT",
                                                                           "/var/lib/virtfleet-test"), "guest-image"))
    parser.add_argument("--output")
    opts = parser.parse_args()
    token = uuid.uuid4().hex[:6]
    root = os.path.join(BENCH_ROOT, "resize-" + token)
    instances = os.path.join(root, "instances")
    os.makedirs(instances)
    for path in (BENCH_ROOT, root, instances):
        os.chmod(path, 0o755)
    name = "vfb-%s-resize" % token
    fleet_names = []
    conn = libvirt.open("qemu:///system")
    libvirt.registerErrorHandler(lambda *_a: None, None)
    figures = {"rounds": opts.rounds, "commit": subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                                               capture_output=True, text=True,
                                                               check=False).stdout.strip()}
    try:
        image = build_image(opts.image_dir)
        boot_guest(instances, name, image)
        console = os.path.join(instances, name, "console.log")
        first = wait_report(console, lambda r: True)
        dom = conn.lookupByName(name)

        def vm_resize(**args):
            params = dict(name=name, instances_path=instances, **args)
            return lambda: check(run_module("vm_resize", params), "vm_resize")

        gap, wall, result = gap_around(console, vm_resize(vcpus=2, memory="384M", disks={"root": "96M"}))
        assert result["how"] == "live", result
        wait_report(console, lambda r: r.cpus == 2 and r.boot == first.boot, timeout=60)
        figures["live"] = {"longest_gap": round(gap, 3), "downtime": round(max(0.0, gap - BEAT_INTERVAL), 3),
                           "module_wall": round(wall, 3), "downtime_seconds": result["downtime_seconds"]}
        print("live resize: module %.2f s, longest heartbeat gap %.2f s (downtime %.2f s)"
              % (wall, gap, figures["live"]["downtime"]), flush=True)

        rows = {"restart": [], "cold": []}
        vcpus, data_mib = 2, 64
        for index in range(opts.rounds):
            gap, wall, _r = gap_around(console, restart(dom), after_boot=True)
            rows["restart"].append({"gap": gap, "wall": wall})
            vcpus, data_mib = (3 if vcpus == 2 else 2), data_mib + 32
            resize = vm_resize(vcpus=vcpus, disks={"blank": "%dM" % data_mib}, mode="cold", allow_decrease=True)
            gap, wall, result = gap_around(console, resize, after_boot=True)
            assert result["how"] == "cold", result
            seconds = result["step_seconds"]
            # Everything between the guest being off and its start: the steps, their record writes, the gaps.
            between = result["downtime_seconds"] - seconds["shutdown"] - seconds["start"]
            rows["cold"].append({"gap": gap, "wall": wall, "downtime_seconds": result["downtime_seconds"],
                                 "steps_while_off": round(between, 3), "step_seconds": result["step_seconds"]})
            print("round %d: restart gap %.2f s (shutdown + start %.2f s); cold resize gap %.2f s (module %.2f s, "
                  "downtime_seconds %.2f, of which backup/grow/define/write %.3f s)" % (
                      index + 1, rows["restart"][-1]["gap"], rows["restart"][-1]["wall"], gap, wall,
                      result["downtime_seconds"], between), flush=True)
        restart_gap = statistics.median(r["gap"] for r in rows["restart"])
        cold_gap = statistics.median(r["gap"] for r in rows["cold"])
        off_work = statistics.median(r["steps_while_off"] for r in rows["cold"])
        libvirt_overhead = statistics.median(r["downtime_seconds"] for r in rows["cold"]) - statistics.median(
            r["wall"] for r in rows["restart"])
        figures.update(rows, restart_gap=round(restart_gap, 3), cold_gap=round(cold_gap, 3),
                       cold_overhead_from_gaps=round(cold_gap - restart_gap, 3),
                       cold_overhead_steps_while_off=round(off_work, 3),
                       cold_overhead_down_to_running=round(libvirt_overhead, 3),
                       cold_downtime=round(cold_gap - BEAT_INTERVAL, 3))
        print("median: restart gap %.2f s, cold resize gap %.2f s: cold downtime %.2f s (live %.2f s). Cold overhead "
              "beyond shutdown + boot (target <= 1 s): %.2f s from the heartbeat gaps, %.3f s of work while the guest "
              "is off (backup, grow, define, domain.xml, record), %.2f s in shutdown-to-running time vs a plain restart "
              "(which mostly measures how fast the test guest notices the power button: it polls it every 1-2 s)" % (
                  restart_gap, cold_gap, cold_gap - BEAT_INTERVAL, figures["live"]["downtime"],
                  cold_gap - restart_gap, off_work, libvirt_overhead), flush=True)
        if opts.fleet:
            dom.destroy()
            fleet_names.extend("vfb-%s-f%02d" % (token, i) for i in range(opts.fleet))
            fleet(root, instances, fleet_names, image, figures)
    except BaseException:
        # Keep the guest's console for the post-mortem: the run directory goes below.
        kept = os.path.join(BENCH_ROOT, "results", "resize_bench-%s-console.log" % token)
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        if os.path.exists(os.path.join(instances, name, "console.log")):
            shutil.copyfile(os.path.join(instances, name, "console.log"), kept)
            print("the guest's console log is kept in %s" % kept, file=sys.stderr)
        raise
    finally:
        for one in [name] + fleet_names:
            try:
                dom = conn.lookupByName(one)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
        shutil.rmtree(root, ignore_errors=True)
    results = os.path.join(BENCH_ROOT, "results")
    os.makedirs(results, exist_ok=True)
    output = opts.output or os.path.join(results, "resize_bench-%s.json" % time.strftime("%Y%m%d-%H%M%S"))
    with open(output, "w") as handle:
        json.dump(figures, handle, indent=1)
    print("results in %s" % output)


if __name__ == "__main__":
    main()
