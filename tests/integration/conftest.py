"""Fixtures for tests that drive real libvirtd, qemu-img and guests.

The environment is checked once, in ``virt_host``: when it is missing (not root, libvirtd not
answering) every integration test fails with the reason — never a silent skip.
Everything lives under /var/lib/virtfleet-test (mode 0755, traversable by libvirt-qemu; pytest's
tmp_path is 0700 and is not).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from typing import Callable, Dict, List

import pytest

from tests.support.guest_report import latest_complete, parse_reports
from tests.support import runner
from tests.support.runner import REPO

SCRATCH = os.environ.get("VIRTFLEET_TEST_ROOT", "/var/lib/virtfleet-test")
URI = "qemu:///system"
TEST_PREFIX = "vft-"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def virt_host():
    """A reachable libvirtd on qemu:///system, as root. Fails loudly when the machine lacks it."""
    problems = []
    if os.geteuid() != 0:
        problems.append("integration tests must run as root (they create domains on qemu:///system)")
    try:
        import libvirt
    except ImportError as exc:
        pytest.fail("libvirt-python is not importable (%s): run scripts/setup-host.sh" % exc, pytrace=False)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; don't also print them
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        problems.append("libvirtd does not answer on %s (%s): run scripts/setup-host.sh" % (URI, exc))
        conn = None
    if shutil.which("qemu-img") is None:
        problems.append("qemu-img is missing: run scripts/setup-host.sh")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
    os.makedirs(SCRATCH, exist_ok=True)
    os.chmod(SCRATCH, 0o755)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def guest_image(virt_host) -> Dict[str, str]:
    """The test guest (tests/guest), built once and cached between runs by its build stamp."""
    out = os.path.join(SCRATCH, "guest-image")
    os.makedirs(out, exist_ok=True)
    proc = subprocess.run(["bash", os.path.join(REPO, "tests", "guest", "build-image.sh"), out],
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail("building the test guest image failed:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:]),
                    pytrace=False)
    image = os.path.join(out, "virtfleet-test-guest.img")
    with open(image, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return {"path": image, "sha256": digest, "size": str(os.path.getsize(image)),
            "kernel": os.path.join(out, "vmlinuz"), "initrd": os.path.join(out, "initrd.img")}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):  # noqa: D401 - keep pytest output clean
        self.server.requests.append((self.command, self.path))


class ImageServer:
    """An HTTP server on 127.0.0.1 serving one directory; records every request."""

    def __init__(self, root: str):
        self.root = root
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(_QuietHandler, directory=root))
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> List[tuple]:
        return self.httpd.requests

    def url(self, name: str) -> str:
        return "http://127.0.0.1:%d/%s" % (self.httpd.server_address[1], name)

    def publish(self, src: str, name: str) -> str:
        dst = os.path.join(self.root, name)
        if not os.path.exists(dst):
            shutil.copyfile(src, dst)
        return self.url(name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def image_server(virt_host):
    root = os.path.join(SCRATCH, "www-%d" % os.getpid())
    os.makedirs(root, exist_ok=True)
    server = ImageServer(root)
    yield server
    server.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_image_url(guest_image, image_server) -> str:
    return image_server.publish(guest_image["path"], "virtfleet-test-guest.img")


# Transient networks with no <forward>: a guest on one reaches nothing beyond the host's bridge address.
# Without <ip> there is no DHCP; with it libvirt's dnsmasq leases from a random 10.213.x.0/24, so that
# concurrent runs do not collide.
_ISOLATED_NET = """
<network>
  <name>%(name)s</name>
  <bridge stp='on' delay='0'/>
</network>
"""
_DHCP_NET = """
<network>
  <name>%(name)s</name>
  <bridge stp='off' delay='0'/>
  <ip address='10.213.%(octet)d.1' netmask='255.255.255.0'>
    <dhcp><range start='10.213.%(octet)d.10' end='10.213.%(octet)d.60'/></dhcp>
  </ip>
</network>
"""


@contextlib.contextmanager
def transient_network(conn, prefix: str, dhcp: bool = False):
    """The name of an isolated transient network (see above), destroyed afterwards."""
    import libvirt
    import random

    name = "%s-%s" % (prefix, uuid.uuid4().hex[:6])
    net, error = None, None
    for _attempt in range(5 if dhcp else 1):
        try:
            net = conn.networkCreateXML((_DHCP_NET if dhcp else _ISOLATED_NET)
                                        % {"name": name, "octet": random.randint(1, 254)})
            break
        except libvirt.libvirtError as exc:  # a random subnet in use by a concurrent run: another one
            error = exc
    if net is None:
        raise error
    try:
        yield name
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            net.destroy()


def destroy_domains(conn, names):
    import libvirt

    for name in names:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        flags = 0
        for flag in ("VIR_DOMAIN_UNDEFINE_NVRAM", "VIR_DOMAIN_UNDEFINE_TPM", "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE"):
            flags |= getattr(libvirt, flag, 0)
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefineFlags(flags)


def new_run_root():
    """(token, root, instances): a fresh directory under SCRATCH with an instances tree libvirt's QEMU can read."""
    token = uuid.uuid4().hex[:6]
    root = os.path.join(SCRATCH, "run-" + token)
    instances = os.path.join(root, "instances")
    os.makedirs(instances)
    os.chmod(root, 0o755)
    os.chmod(instances, 0o755)
    return token, root, instances


@contextlib.contextmanager
def new_sandbox(conn):
    """A fresh instances tree and guest-name factory; removes every domain and file made in it afterwards."""
    token, root, instances = new_run_root()
    names: List[str] = []

    def guest_name(label: str = "g") -> str:
        name = "%s%s-%s-%d" % (TEST_PREFIX, token, label, len(names))
        names.append(name)
        return name

    box = type("Sandbox", (), {})()
    box.root = root
    box.instances = instances
    box.guest_name = guest_name
    box.names = names
    box.conn = conn
    try:
        yield box
    finally:
        destroy_domains(conn, names)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sandbox(virt_host, request):
    """A sandbox (see ``new_sandbox``) for one test."""
    with new_sandbox(virt_host) as box:
        yield box


@pytest.fixture(scope="module")
def module_sandbox(virt_host):
    """A sandbox shared by the tests of one file: for guests that several tests use one after the other (a
    booted guest costs seconds of TCG; tests that leave it as they found it can share it)."""
    with new_sandbox(virt_host) as box:
        yield box


def read_console(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def wait_for_report(console_log: str, timeout: float = 180, predicate: Callable = None):
    """The guest's latest complete report (optionally the first one satisfying ``predicate``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read_console(console_log)
        report = latest_complete(text)
        if report is not None and (predicate is None or predicate(report)):
            return report
        time.sleep(0.25)
    raise AssertionError("no %sguest report in %s after %.0f s; console says:\n%s" % (
        "matching " if predicate else "", console_log, timeout, read_console(console_log)[-4000:]))


@pytest.fixture
def report_of():
    return wait_for_report


# Runs the real module file as its own __main__ and says on exit which heavy modules it imported.
_PROBE = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write("\\nVFPROBE model=%%d lxml=%%d\\n" %% (
    any(m.endswith("._domain.model") for m in sys.modules), "lxml" in sys.modules)))
sys.argv[0] = %r
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture
def probed(monkeypatch, tmp_path):
    """Runs the domain module under a probe; returns (result, whether the domain model and lxml were imported):
    a re-run that takes the memo's fast path imports neither."""
    real_path = runner.module_path
    wrapper = str(tmp_path / "probe_domain.py")
    with open(wrapper, "w") as handle:
        handle.write(_PROBE % real_path("domain"))
    monkeypatch.setattr(runner, "module_path", lambda name: wrapper if name == "domain" else real_path(name))

    def run(name, sandbox, check=False, diff=False, **args):
        args.setdefault("instances_path", sandbox.instances)
        result = runner.run_module("domain", dict(name=name, **args), check=check, diff=diff)
        found = re.search(r"VFPROBE model=(\d) lxml=(\d)", result["_stderr"])
        assert found, result["_stderr"]
        result.pop("_stderr")
        return result, {"model": found.group(1) == "1", "lxml": found.group(2) == "1"}

    return run


__all__ = ["parse_reports", "wait_for_report", "read_console", "destroy_domains", "SCRATCH", "URI"]
