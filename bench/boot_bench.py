"""Benchmark (issue 5): boot N guests through the boot role vs a bare shell loop; idempotent re-run vs stat tasks.

1. ``boot``: ``playbooks/boot.yml`` (image_cache -> guest_disk -> domain_xml -> domain, delegated to one
   local hypervisor) defines and starts N guests of a tiny flavor from the test guest image, served on
   127.0.0.1. Baseline: one bash script that, for N equivalent guests, runs ``qemu-img create -f qcow2
   -F raw -b base`` + ``virsh define`` + ``virsh start``. The baseline's domain XML files are written by
   ``domain_xml`` beforehand (untimed), so both sides start exactly the same kind of guest.
   Target: playbook <= 1.5 x shell.
2. ``rerun``: the same playbook again (nothing to change) vs a playbook that runs, for the same guests,
   the same number of ``ansible.builtin.stat`` tasks per guest, delegated to the same hypervisor, with the
   same inventory and forks. Both are timed while the N guests run. Target: re-run <= 1.2 x stat.

Guests use fw_cfg mode ``stay`` (a ``once`` guest powers itself off, and the re-run would then have to
start it again: not a no-op). Every domain and file the run makes is removed at the end, even on failure.

Usage (root, libvirtd on qemu:///system):
  .venv/bin/python bench/boot_bench.py [--guests 20] [--memory 96M] [--rounds 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))

from tests.support.guest_report import latest_complete  # noqa: E402
from tests.support.runner import PYTHON, run_module, run_playbook  # noqa: E402

BENCH_ROOT = "/var/lib/virtfleet-bench"
URI = "qemu:///system"
FLAVOR = "b.tiny"
# Module tasks the boot role runs per guest with this inventory (image_cache, guest_disk root, domain_xml,
# domain): the strict baseline. The other baseline has one stat per task listed in the role's tasks file.
MODULE_TASKS = 4


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass


@contextlib.contextmanager
def image_server(directory):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=directory))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def sh(cmd, **kwargs):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def build_image(image_dir):
    """The test guest (tests/guest/build-image.sh; a no-op when its build stamp is current)."""
    os.makedirs(image_dir, exist_ok=True)
    proc = subprocess.run(["bash", os.path.join(REPO, "tests", "guest", "build-image.sh"), image_dir],
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit("building the test guest failed:\n%s\n%s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
    return os.path.join(image_dir, "virtfleet-test-guest.img")


def snapshot_collection(run_dir):
    """A copy of the collection as it is now: other people editing the checkout cannot change it mid-run."""
    root = os.path.join(run_dir, "collections")
    dest = os.path.join(root, "ansible_collections", "virtfleet", "libvirt")
    os.makedirs(dest)
    for item in ("galaxy.yml", "meta", "plugins", "roles", "playbooks"):
        src = os.path.join(REPO, item)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, item), ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.exists(src):
            shutil.copy2(src, dest)
    return root, os.path.join(dest, "playbooks", "boot.yml")


def write_inventory(path, guests, hypervisor_vars, flavor=FLAVOR):
    inventory = {"all": {"children": {
        "hypervisors": {"hosts": {"hv": {"ansible_connection": "local",
                                         "ansible_python_interpreter": PYTHON}}},
        "guests": {"hosts": {name: {"virtfleet_flavor": flavor} for name in guests}, "vars": hypervisor_vars},
    }}}
    with open(path, "w") as handle:
        json.dump(inventory, handle, indent=1)
    return path


def write_stat_playbook(path, count):
    tasks = "".join(
        "    - name: Stat {i}\n"
        "      ansible.builtin.stat:\n"
        "        path: \"{{{{ virtfleet_instances_path }}}}/{{{{ inventory_hostname }}}}/domain.xml\"\n"
        "      delegate_to: \"{{{{ virtfleet_hypervisor }}}}\"\n".format(i=i) for i in range(count))
    with open(path, "w") as handle:
        handle.write("---\n- name: Stat baseline\n  hosts: guests\n  gather_facts: false\n  tasks:\n" + tasks)
    return path


# A per-task timer (ansible.posix.profile_tasks is not installed here): written into the run directory
# and enabled through ANSIBLE_CALLBACK_PLUGINS for every timed ansible-playbook run, baselines included.
TIMER_CALLBACK = """
import time
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "vf_bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._marks = [("(start-up: callback loaded -> first task)", time.monotonic())]

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._marks.append((task.get_name(), time.monotonic()))

    def v2_playbook_on_stats(self, stats):
        self._marks.append(("(end)", time.monotonic()))
        for (name, start), (_next, end) in zip(self._marks, self._marks[1:]):
            self._display.display("VFTIMER %.3f %s" % (end - start, name))
"""

TIMER_RE = re.compile(r"^VFTIMER (\d+\.\d+) (.+)$", re.M)


def profile(stdout, total):
    """Per-task wall time [(task, seconds)] in playbook order, plus what is left outside the tasks."""
    tasks = [(name.strip(), round(float(sec), 2)) for sec, name in TIMER_RE.findall(stdout)]
    inside = sum(sec for _name, sec in tasks)
    tasks.append(("(process start-up and inventory before the callback, and exit)", round(total - inside, 2)))
    return tasks


def timed_playbook(playbook, inventory, label, run_dir):
    env = {"ANSIBLE_CALLBACK_PLUGINS": os.path.join(run_dir, "callbacks"),
           "ANSIBLE_COLLECTIONS_PATH": os.path.join(run_dir, "collections"),
           "ANSIBLE_CALLBACKS_ENABLED": "vf_bench_timer"}
    start = time.monotonic()
    run = run_playbook(playbook, inventory, env=env, timeout=1800)
    elapsed = time.monotonic() - start
    if run.rc != 0 or run.failed():
        raise RuntimeError("%s failed (rc=%d):\n%s\n%s" % (label, run.rc, run.stdout[-4000:], run.stderr[-2000:]))
    return elapsed, run


def wait_reports(consoles, timeout):
    """Seconds until every console shows a complete guest report (None if some never did)."""
    start = time.monotonic()
    pending = set(consoles)
    while pending and time.monotonic() - start < timeout:
        for path in list(pending):
            try:
                with open(path, "rb") as handle:
                    if latest_complete(handle.read().decode("utf-8", "replace")) is not None:
                        pending.discard(path)
            except FileNotFoundError:
                pass
        time.sleep(0.5)
    return (time.monotonic() - start) if not pending else None


def cleanup(prefix, run_dir):
    import libvirt

    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains(0):
            if not dom.name().startswith(prefix):
                continue
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefineFlags(getattr(libvirt, "VIR_DOMAIN_UNDEFINE_NVRAM", 0))
    finally:
        conn.close()
    shutil.rmtree(run_dir, ignore_errors=True)


def running_count(prefix):
    out = sh(["virsh", "-c", URI, "list", "--name", "--state-running"]).stdout.split()
    return sum(1 for name in out if name.startswith(prefix))


def _interrupt(_signum, _frame):
    """A signal handler that ends the run as Ctrl-C does, through the same cleanup."""
    raise KeyboardInterrupt()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=20)
    parser.add_argument("--vcpus", type=int, default=1)
    parser.add_argument("--memory", default="96M")
    parser.add_argument("--disk", default="64M")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the re-run and of each stat baseline")
    parser.add_argument("--image-dir", default=os.path.join(os.environ.get("VIRTFLEET_TEST_ROOT",
                                                                           "/var/lib/virtfleet-test"), "guest-image"),
                        help="build cache of the test guest image (shared with the tests, kept)")
    parser.add_argument("--output", default=os.path.join(BENCH_ROOT, "results", "boot_bench-%s.json"
                                                         % time.strftime("%Y%m%dT%H%M%S")))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark defines domains on %s" % URI)

    token = uuid.uuid4().hex[:6]
    prefix = "vfb-%s-" % token
    os.makedirs(BENCH_ROOT, exist_ok=True)
    os.chmod(BENCH_ROOT, 0o755)
    run_dir = os.path.join(BENCH_ROOT, "run-" + token)
    # Terminate cleanly (and so clean up) on SIGTERM/SIGHUP as on Ctrl-C.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    results = {"guests": args.guests, "flavor": {"vcpus": args.vcpus, "memory": args.memory, "disk": args.disk},
               "virt_type": "qemu", "mode": "stay", "cpus": os.cpu_count(), "rounds": args.rounds}
    try:
        image = build_image(args.image_dir)
        with open(image, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        www = os.path.join(run_dir, "www")
        os.makedirs(www)
        os.chmod(run_dir, 0o755)
        shutil.copyfile(image, os.path.join(www, "guest.img"))
        os.makedirs(os.path.join(run_dir, "callbacks"))
        with open(os.path.join(run_dir, "callbacks", "vf_bench_timer.py"), "w") as handle:
            handle.write(TIMER_CALLBACK)

        with image_server(www) as base_url:
            bench(args, prefix, run_dir, image, base_url + "/guest.img", digest, results)
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


def bench(args, prefix, run_dir, image, image_url, digest, results):
    """Fills ``results`` as it goes, so that a failure still leaves the figures measured so far."""
    n = args.guests
    profiles = results["profiles"] = {}
    _collections, playbook = snapshot_collection(run_dir)

    # ---------------------------------------------------------------- shell baseline (untimed preparation)
    sh_instances = os.path.join(run_dir, "shell")
    sh_names = ["%ssh-%02d" % (prefix, i) for i in range(n)]
    base = os.path.join(sh_instances, "_base", "guest.img")
    os.makedirs(os.path.dirname(base))
    os.chmod(sh_instances, 0o755)
    shutil.copyfile(image, base)
    lines = ["set -euo pipefail"]
    for name in sh_names:
        disk = os.path.join(sh_instances, name, "disk")
        xml = run_module("domain_xml", {
            "name": name, "vcpus": args.vcpus, "memory": args.memory, "virt_type": "qemu",
            "instances_path": sh_instances, "fw_cfg": {"opt/org.virtfleet/mode": "stay"},
            "disks": [{"path": disk, "format": "qcow2", "boot_order": 1}]})
        if xml["_rc"] != 0:
            raise RuntimeError("domain_xml failed: %s" % xml.get("msg"))
        lines += ["qemu-img create -q -f qcow2 -F raw -b %s %s %s" % (base, disk, args.disk),
                  "virsh -q -c %s define %s >/dev/null" % (URI, xml["path"]),
                  "virsh -q -c %s start %s >/dev/null" % (URI, name)]
    script = os.path.join(run_dir, "shell-loop.sh")
    with open(script, "w") as handle:
        handle.write("\n".join(lines) + "\n")

    start = time.monotonic()
    proc = subprocess.run(["bash", script], capture_output=True, text=True, check=False)
    shell_s = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError("shell loop failed: %s" % proc.stderr[-2000:])
    sh_running = running_count(prefix + "sh-")
    sh_reported = wait_reports([os.path.join(sh_instances, m, "console.log") for m in sh_names], 300)
    cleanup(prefix + "sh-", sh_instances)

    # ---------------------------------------------------------------- the boot role
    pb_instances = os.path.join(run_dir, "instances")
    os.makedirs(pb_instances)
    os.chmod(pb_instances, 0o755)
    pb_names = ["%spb-%02d" % (prefix, i) for i in range(n)]
    inventory = write_inventory(os.path.join(run_dir, "inventory.json"), pb_names, {
        "virtfleet_hypervisor": "hv",
        "virtfleet_image_url": image_url,
        "virtfleet_image_checksum": "sha256:" + digest,
        "virtfleet_image_format": "raw",
        "virtfleet_instances_path": pb_instances,
        "virtfleet_virt_type": "qemu",
        "virtfleet_flavors": {FLAVOR: {"vcpus": args.vcpus, "memory": args.memory, "disk": args.disk}},
        "virtfleet_fw_cfg": {"opt/org.virtfleet/mode": "stay"},
    })
    pb_s, run = timed_playbook(playbook, inventory, "boot playbook", run_dir)
    profiles["boot"] = profile(run.stdout, pb_s)
    changed = run.changed()
    pb_running = running_count(prefix + "pb-")
    pb_reported = wait_reports([os.path.join(pb_instances, m, "console.log") for m in pb_names], 300)

    boot = results["boot"] = {
        "shell_s": round(shell_s, 2), "playbook_s": round(pb_s, 2), "ratio": round(pb_s / shell_s, 2),
        "target": 1.5, "playbook_changed": changed, "running_after": {"shell": sh_running, "playbook": pb_running},
        "all_reported_after_s": {"shell": sh_reported and round(sh_reported, 1),
                                 "playbook": pb_reported and round(pb_reported, 1)}}

    # ---------------------------------------------------------------- idempotent re-run vs stat tasks
    rerun = results["rerun"] = {"playbook_s": [], "changed": []}
    import yaml

    with open(os.path.join(os.path.dirname(os.path.dirname(playbook)), "roles", "boot", "tasks", "main.yml")) as fh:
        role_tasks = len(yaml.safe_load(fh))
    variants = {"stat x%d (one per module task run)" % MODULE_TASKS: MODULE_TASKS,
                "stat x%d (one per role task)" % role_tasks: role_tasks}
    stat_books = {label: write_stat_playbook(os.path.join(run_dir, "stat-%d.yml" % count), count)
                  for label, count in variants.items()}
    stats = {label: [] for label in variants}
    for round_ in range(args.rounds):
        elapsed, run = timed_playbook(playbook, inventory, "re-run", run_dir)
        rerun["playbook_s"].append(round(elapsed, 2))
        rerun["changed"].append(run.changed())
        if round_ == 0:
            profiles["rerun"] = profile(run.stdout, elapsed)
        for label, book in stat_books.items():
            elapsed, run = timed_playbook(book, inventory, label, run_dir)
            stats[label].append(round(elapsed, 2))
            if round_ == 0:
                profiles[label] = profile(run.stdout, elapsed)
    rerun["playbook_median_s"] = statistics.median(rerun["playbook_s"])
    rerun["baselines"] = {}
    for label, values in stats.items():
        med = statistics.median(values)
        rerun["baselines"][label] = {"s": values, "median_s": med,
                                     "ratio": round(rerun["playbook_median_s"] / med, 2)}
    rerun["target"] = 1.2
    rerun["running_during"] = running_count(prefix + "pb-")


def report(results):
    if "boot" not in results or "baselines" not in results.get("rerun", {}):
        print(json.dumps({k: v for k, v in results.items() if k != "error"}, indent=1))
        return
    boot, rerun = results["boot"], results["rerun"]
    print("\nboot_bench: %d guests, %s, virt_type qemu (TCG), mode stay, %s cores"
          % (results["guests"], results["flavor"], results["cpus"]))
    rows = [("define+start: shell loop", "%.1f s" % boot["shell_s"], "", ""),
            ("define+start: boot playbook", "%.1f s" % boot["playbook_s"], "%.2fx" % boot["ratio"],
             "<= %.1fx %s" % (boot["target"], "ok" if boot["ratio"] <= boot["target"] else "MISSED"))]
    rows.append(("idempotent re-run (median of %s)" % ", ".join("%.1f" % v for v in rerun["playbook_s"]),
                 "%.1f s" % rerun["playbook_median_s"], "", "changed=%s" % rerun["changed"]))
    for label, base in rerun["baselines"].items():
        rows.append(("  vs %s (median of %s)" % (label, ", ".join("%.1f" % v for v in base["s"])),
                     "%.1f s" % base["median_s"], "%.2fx" % base["ratio"],
                     "<= %.1fx %s" % (rerun["target"], "ok" if base["ratio"] <= rerun["target"] else "MISSED")))
    width = max(len(r[0]) for r in rows)
    print("%-*s  %9s  %7s  %s" % (width, "measure", "time", "ratio", "target"))
    for row in rows:
        print("%-*s  %9s  %7s  %s" % (width, row[0], row[1], row[2], row[3]))
    print("guests running after boot: shell %(shell)s, playbook %(playbook)s" % boot["running_after"])
    print("all guests reported on their console after (s): shell %(shell)s, playbook %(playbook)s"
          % boot["all_reported_after_s"])
    for name, tasks in results["profiles"].items():
        print("\ntime per task (wall, all guests in parallel), %s:" % name)
        for task, seconds in tasks:
            print("  %6.2f s  %s" % (seconds, task))
    cleaned = results["cleanup"]
    print("\ncleanup: domains left %s, run dir left %s" % (cleaned["domains_left"], cleaned["run_dir_left"]))


if __name__ == "__main__":
    sys.exit(main())
