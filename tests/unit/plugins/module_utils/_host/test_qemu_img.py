"""The qemu-img wrapper: explicit formats, limits on inspection, clear errors, and real qemu-img behaviour."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format import inspect_file
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.qemu_img import QemuImgError
from tests.support import hostile_images

MIB = 1024 * 1024

FAKE_QEMU_IMG = """#!/bin/sh
# Records how it was run: one argument per line, then its limits and locale.
for arg in "$@"; do printf '%s\\n' "$arg"; done > "$FAKE_QEMU_IMG_LOG"
printf '{"as": "%s", "cpu": "%s", "lc_all": "%s"}\\n' "$(ulimit -v)" "$(ulimit -t)" "$LC_ALL" > "$FAKE_QEMU_IMG_LOG.env"
if [ -n "$FAKE_QEMU_IMG_SLEEP" ]; then sleep "$FAKE_QEMU_IMG_SLEEP"; fi
if [ -n "$FAKE_QEMU_IMG_FAIL" ]; then echo "$FAKE_QEMU_IMG_FAIL" >&2; exit 1; fi
echo '{"virtual-size": 1, "format": "raw"}'
"""


@pytest.fixture(scope="session", autouse=True)
def _need_qemu_img():
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is required for the qemu-img wrapper tests (apt-get install qemu-utils)")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A stand-in qemu-img that records its arguments, rlimits and locale."""
    script = tmp_path / "fake-qemu-img"
    script.write_text(FAKE_QEMU_IMG)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "fake.log"
    monkeypatch.setattr(qemu_img, "QEMU_IMG_BINARY", str(script))
    monkeypatch.setenv("FAKE_QEMU_IMG_LOG", str(log))
    monkeypatch.delenv("FAKE_QEMU_IMG_SLEEP", raising=False)
    monkeypatch.delenv("FAKE_QEMU_IMG_FAIL", raising=False)

    class Recorder:
        def args(self):
            return log.read_text().splitlines()

        def env(self):
            return json.loads((tmp_path / "fake.log.env").read_text())

        def ran(self):
            return log.exists()

    return Recorder()


def _format_after_f(args):
    return args[args.index("-f") + 1]


# --- every call names the format ------------------------------------------------------------------

CALLS = {
    "info": lambda fmt: qemu_img.info("disk", fmt),
    "check": lambda fmt: qemu_img.check("disk", fmt),
    "measure": lambda fmt: qemu_img.measure("disk", fmt, "qcow2"),
    "create": lambda fmt: qemu_img.create("disk", fmt, 1024),
    "convert": lambda fmt: qemu_img.convert("src", fmt, "dst", "qcow2"),
    "resize": lambda fmt: qemu_img.resize("disk", fmt, 1024),
}


@pytest.mark.parametrize("operation", sorted(CALLS))
def test_every_call_passes_f_and_absolute_paths(fake, operation):
    CALLS[operation]("vhd")
    args = fake.args()
    assert args[0] == operation
    assert _format_after_f(args) == "vpc"  # our name mapped to qemu's driver
    paths = [a for a in args if a.endswith(("disk", "src", "dst"))]
    assert paths and all(os.path.isabs(p) for p in paths)
    assert fake.env()["lc_all"] == "C"


@pytest.mark.parametrize("operation", sorted(CALLS))
@pytest.mark.parametrize("fmt", [None, "", "-o backing_file=/etc/passwd", "qcow", "floppy"])
def test_missing_or_unknown_format_never_reaches_qemu_img(fake, operation, fmt):
    with pytest.raises(ValueError, match="format"):
        CALLS[operation](fmt)
    assert not fake.ran()


@pytest.mark.parametrize("operation", ["info", "check", "measure"])
def test_inspection_runs_under_nova_limits(fake, operation):
    CALLS[operation]("qcow2")
    env = fake.env()
    assert env["as"] == str(1024 * 1024)  # KiB: 1 GiB of address space
    assert env["cpu"] == "30"


@pytest.mark.parametrize("operation", ["create", "convert", "resize"])
def test_writes_are_not_memory_limited(fake, operation):
    CALLS[operation]("raw")
    assert fake.env()["as"] == "unlimited"


def test_info_reads_json_shared(fake):
    assert qemu_img.info("disk", "qcow2") == {"virtual-size": 1, "format": "raw"}
    args = fake.args()
    assert "--output=json" in args and "-U" in args and "--backing-chain" not in args
    qemu_img.info("disk", "qcow2", force_share=False, backing_chain=True)
    args = fake.args()
    assert "-U" not in args and "--backing-chain" in args


def test_create_with_backing_always_passes_F(fake):
    qemu_img.create("overlay", "qcow2", "10G", backing_file="base", backing_fmt="raw")
    args = fake.args()
    assert args[args.index("-b") + 1] == os.path.abspath("base")
    assert args[args.index("-F") + 1] == "raw"
    assert args[-1] == str(10 * 1024 ** 3)


def test_create_backing_without_format_is_refused(fake):
    with pytest.raises(ValueError, match="backing_fmt"):
        qemu_img.create("overlay", "qcow2", 1024, backing_file="base")
    assert not fake.ran()


def test_create_options_are_escaped(fake):
    qemu_img.create("disk", "qcow2", 1024, options={"cluster_size": 65536, "lazy_refcounts": True},
                    preallocation="metadata")
    args = fake.args()
    assert args[args.index("-o") + 1] == "cluster_size=65536,lazy_refcounts=on,preallocation=metadata"
    qemu_img.create("disk", "qcow2", 1024, options={"compat": "1.1,backing_file=/etc/passwd"})
    args = fake.args()
    assert args[args.index("-o") + 1] == "compat=1.1,,backing_file=/etc/passwd"
    with pytest.raises(ValueError, match="option name"):
        qemu_img.create("disk", "qcow2", 1024, options={"a=b,backing_file": "x"})
    with pytest.raises(ValueError, match=r"option name 'compat\\n'"):  # "$" would have matched before the newline
        qemu_img.create("disk", "qcow2", 1024, options={"compat\n": "1.1"})


def test_convert_sparse_flag(fake):
    qemu_img.convert("src", "raw", "dst", "qcow2")
    assert "-S" not in fake.args()
    qemu_img.convert("src", "raw", "dst", "qcow2", sparse=False)
    args = fake.args()
    assert args[args.index("-S") + 1] == "0"
    assert args[args.index("-O") + 1] == "qcow2"


def test_resize_shrink_must_be_asked_for(fake):
    qemu_img.resize("disk", "raw", 1024)
    assert "--shrink" not in fake.args()
    qemu_img.resize("disk", "raw", 1024, shrink=True)
    assert "--shrink" in fake.args()


def test_path_that_looks_like_a_protocol_or_option_stays_a_file(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    qemu_img.info("json:{\"file.driver\":\"nbd\"}", "raw")
    assert fake.args()[-1].startswith(str(tmp_path) + "/json:")
    qemu_img.info("-evil", "raw")
    assert fake.args()[-1] == str(tmp_path / "-evil")


def test_failure_message_names_operation_file_stderr_and_advice(fake, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_IMG_FAIL", "qemu-img: Could not open 'disk': Permission denied")
    with pytest.raises(QemuImgError, match=r"^qemu-img resize of .*/disk \(format qcow2\) failed with exit code 1") \
            as caught:
        qemu_img.resize("disk", "qcow2", 2048)
    exc = caught.value
    assert isinstance(exc, VirtfleetError)
    assert exc.returncode == 1
    assert "Permission denied" in exc.stderr
    assert exc.cmd[0] == qemu_img.QEMU_IMG_BINARY and "-f" in exc.cmd
    assert "qemu-img resize of %s (format qcow2) failed with exit code 1" % os.path.abspath("disk") in exc.msg
    assert "Permission denied" in exc.msg and "What to do:" in exc.msg


def test_timeout_is_reported(fake, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_IMG_SLEEP", "5")
    monkeypatch.setattr(qemu_img, "INSPECT_TIMEOUT", 1)
    started = time.monotonic()
    with pytest.raises(QemuImgError, match="did not finish within 1 seconds") as caught:
        qemu_img.info("disk", "raw")
    assert caught.value.returncode is None
    assert time.monotonic() - started < 4


def test_missing_binary_is_explained(monkeypatch):
    monkeypatch.setattr(qemu_img, "QEMU_IMG_BINARY", "/nonexistent/qemu-img")
    with pytest.raises(QemuImgError, match="qemu-img is not installed.*qemu-utils"):
        qemu_img.info("disk", "raw")


def test_is_locked_error_matches_qemu_lock_messages():
    locked = QemuImgError("x", ["qemu-img"], 1, 'qemu-img: Failed to get "write" lock\n'
                                                "Is another process using the image [disk]?\n")
    other = QemuImgError("x", ["qemu-img"], 1, "qemu-img: Could not open 'disk': No such file or directory")
    assert qemu_img.is_locked_error(locked)
    assert not qemu_img.is_locked_error(other)
    assert not qemu_img.is_locked_error(VirtfleetError('Failed to get "write" lock'))
    assert not qemu_img.is_locked_error(RuntimeError("boom"))


# --- real qemu-img ------------------------------------------------------------------------------

def test_real_create_info_resize_convert_check(tmp_path):
    disk = str(tmp_path / "disk.qcow2")
    qemu_img.create(disk, "qcow2", 64 * MIB)
    info = qemu_img.info(disk, "qcow2")
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * MIB
    qemu_img.resize(disk, "qcow2", 128 * MIB)
    assert qemu_img.info(disk, "qcow2")["virtual-size"] == 128 * MIB
    report = qemu_img.check(disk, "qcow2")
    assert report["supported"] and report["check-errors"] == 0 and not report.get("corruptions")
    raw = str(tmp_path / "disk.raw")
    qemu_img.convert(disk, "qcow2", raw, "raw")
    assert os.path.getsize(raw) == 128 * MIB
    assert os.stat(raw).st_blocks * 512 < MIB  # stayed sparse
    assert inspect_file(raw).format == "raw"
    assert qemu_img.check(raw, "raw") == {"filename": raw, "format": "raw", "supported": False}
    assert qemu_img.measure(raw, "raw", "qcow2")["fully-allocated"] > 128 * MIB


def test_real_overlay_records_backing_format(tmp_path):
    base = str(tmp_path / "base.raw")
    qemu_img.create(base, "raw", 16 * MIB)
    overlay = str(tmp_path / "overlay.qcow2")
    qemu_img.create(overlay, "qcow2", 32 * MIB, backing_file=base, backing_fmt="raw")
    info = qemu_img.info(overlay, "qcow2", backing_chain=True)
    assert info["backing-filename"] == base
    assert info["backing-filename-format"] == "raw"
    assert [layer["format"] for layer in info["chain"]] == ["qcow2", "raw"]


def test_real_shrink_refused_without_flag(tmp_path):
    disk = str(tmp_path / "disk.raw")
    qemu_img.create(disk, "raw", 16 * MIB)
    with pytest.raises(QemuImgError, match="resize of .*--shrink.*What to do: shrinking loses data"):
        qemu_img.resize(disk, "raw", 8 * MIB)
    assert os.path.getsize(disk) == 16 * MIB
    qemu_img.resize(disk, "raw", 8 * MIB, shrink=True)
    assert os.path.getsize(disk) == 8 * MIB


def test_real_info_error_names_file(tmp_path):
    missing = str(tmp_path / "missing.qcow2")
    with pytest.raises(QemuImgError, match="No such file or directory") as caught:
        qemu_img.info(missing, "qcow2")
    assert missing in caught.value.msg and "No such file or directory" in caught.value.msg
    assert not qemu_img.is_locked_error(caught.value)


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_guest_written_qcow2_header_in_raw_disk_is_resized_as_raw(tmp_path):
    """CVE-2026-24708: a guest writes a qcow2 header (backing file /etc/passwd) into its raw disk.

    With -f raw the file stays raw, grows by plain truncation and nothing follows the fake backing
    file; the guest's bytes are left exactly as written.
    """
    disk = str(tmp_path / "disk")
    qemu_img.create(disk, "raw", 16 * MIB)
    payload_source = hostile_images.qcow2_backing_file(str(tmp_path))
    with open(payload_source, "rb") as handle:
        payload = handle.read(64 * 1024)
    with open(disk, "r+b") as handle:  # what the guest does through its block device
        handle.write(payload)
    passwd_before = _sha256("/etc/passwd")
    # Probing would see the attack: qemu reads the header as qcow2 with a backing file.
    probed = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", disk],
                                       capture_output=True, text=True, check=True).stdout)
    assert probed["backing-filename"] == "/etc/passwd"

    qemu_img.resize(disk, "raw", 32 * MIB)

    assert os.path.getsize(disk) == 32 * MIB
    with open(disk, "rb") as handle:
        assert handle.read(len(payload)) == payload  # guest data untouched, still a "qcow2 header"
    info = qemu_img.info(disk, "raw")
    assert info["format"] == "raw" and info["virtual-size"] == 32 * MIB
    assert "backing-filename" not in info
    assert _sha256("/etc/passwd") == passwd_before


def _ofd_locked(path):
    """True when some process holds an OFD lock (qemu's kind) on ``path``."""
    inode = os.stat(path).st_ino
    with open("/proc/locks", encoding="ascii") as handle:
        return any(line.split()[1] == "OFDLCK" and line.split()[5].endswith(":%d" % inode) for line in handle)


@pytest.fixture
def image_held_by_qemu(tmp_path):
    """A raw image served read-write by qemu-nbd, which holds qemu's image lock as a running guest does."""
    yield from _held_by_qemu_nbd(tmp_path, "raw")


@pytest.fixture
def qcow2_held_by_qemu(tmp_path):
    """The same with a qcow2 image, which qemu-img check can check."""
    yield from _held_by_qemu_nbd(tmp_path, "qcow2")


def _held_by_qemu_nbd(tmp_path, fmt):
    if shutil.which("qemu-nbd") is None:
        pytest.fail("qemu-nbd (qemu-utils) is required to hold a qemu image lock")
    disk = str(tmp_path / ("held." + fmt))
    qemu_img.create(disk, fmt, 16 * MIB)
    proc = subprocess.Popen(["qemu-nbd", "-f", fmt, "-k", str(tmp_path / "nbd.sock"), disk],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _ofd_locked(disk):  # watch /proc/locks: probing with qemu-img would race qemu-nbd's start
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("qemu-nbd did not take the image lock (exit %s): %s"
                            % (proc.poll(), proc.stderr.read().decode() if proc.poll() is not None else ""))
            time.sleep(0.02)
        yield disk
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_locked_image_error_is_recognised(image_held_by_qemu):
    with pytest.raises(QemuImgError, match="in use by another process") as caught:
        qemu_img.resize(image_held_by_qemu, "raw", 32 * MIB)
    assert qemu_img.is_locked_error(caught.value)
    assert 'Failed to get "resize" lock' in caught.value.stderr
    assert "in use by another process" in caught.value.msg
    assert os.path.getsize(image_held_by_qemu) == 16 * MIB
    # -U lets inspection read the disk of a running guest.
    assert qemu_img.info(image_held_by_qemu, "raw")["virtual-size"] == 16 * MIB


# --- a child dies with the module (issue 10 item 8) -----------------------------------------------

_SLOW_QEMU_IMG = """#!/bin/sh
echo $$ > "$SLOW_QEMU_IMG_PID"
exec sleep 60
"""

_CALLER = """
import sys
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import qemu_img
qemu_img.QEMU_IMG_BINARY = sys.argv[1]
qemu_img.create(sys.argv[2], "qcow2", 1 << 20)
"""


def test_qemu_img_dies_when_the_module_is_killed(tmp_path):
    import signal
    import sys

    from tests.support.processes import is_running
    from tests.support.runner import COLLECTIONS

    slow = tmp_path / "slow-qemu-img"
    slow.write_text(_SLOW_QEMU_IMG)
    slow.chmod(0o755)
    target = tmp_path / "disk"
    pid_file = tmp_path / "qemu-img.pid"
    caller = subprocess.Popen([sys.executable, "-c", _CALLER, str(slow), str(target)],
                              env=dict(os.environ, PYTHONPATH=COLLECTIONS, SLOW_QEMU_IMG_PID=str(pid_file)))
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not pid_file.exists():
        caller.kill()
        pytest.fail("the stand-in qemu-img never started")
    child = int(pid_file.read_text())
    try:
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait(10)
        deadline = time.monotonic() + 2
        while is_running(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not is_running(child), "qemu-img outlived the module that ran it"
    finally:
        if is_running(child):
            os.kill(child, signal.SIGKILL)


def test_check_reads_the_disk_of_a_running_guest(qcow2_held_by_qemu):
    """Issue 10 item 21: without -U, qemu-img check of a disk qemu holds fails on qemu's lock."""
    report = qemu_img.check(qcow2_held_by_qemu, "qcow2")
    assert report["supported"] is True and report["check-errors"] == 0 and report["filename"] == qcow2_held_by_qemu
    code = subprocess.run(["qemu-img", "check", "-f", "qcow2", qcow2_held_by_qemu], capture_output=True,
                          text=True, check=False)
    assert code.returncode != 0 and "lock" in code.stderr  # what check would say without -U


def test_check_passes_u_and_json(fake):
    qemu_img.check("disk", "qcow2")
    assert fake.args() == ["check", "-f", "qcow2", "--output=json", "-U", os.path.abspath("disk")]
