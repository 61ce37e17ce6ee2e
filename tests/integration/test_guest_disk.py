"""guest_disk against real qemu-img: root overlays and flat copies, growth, refusals, check mode."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time

import pytest

from tests.support.runner import run_module

MIB = 1 << 20


def qemu_info(path, fmt):
    out = subprocess.run(["qemu-img", "info", "-U", "-f", fmt, "--output=json", path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture
def base(sandbox):
    """A 32 MiB raw base in the sandbox's cache directory."""
    base_dir = os.path.join(sandbox.instances, "_base")
    os.makedirs(base_dir)
    path = os.path.join(base_dir, "base.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, "32M"], check=True)
    return path


def disk_args(sandbox, base, guest, **extra):
    args = {"guest": guest, "kind": "root", "base": base, "base_format": "raw", "size": "64M",
            "instances_path": sandbox.instances}
    args.update(extra)
    return args


def test_overlay_root_is_created_once_with_explicit_backing_format(sandbox, base):
    guest = sandbox.guest_name()
    first = run_module("guest_disk", disk_args(sandbox, base, guest))
    assert first["changed"] is True and first["_rc"] == 0, first
    path = os.path.join(sandbox.instances, guest, "disk")
    info = qemu_info(path, "qcow2")
    assert info["virtual-size"] == 64 * MIB
    assert info["backing-filename"] == base
    assert info["backing-filename-format"] == "raw"
    record = json.load(open(os.path.join(sandbox.instances, guest, "disk.info.json")))
    assert record["disk"]["format"] == "qcow2"

    mtime = os.stat(path).st_mtime_ns
    second = run_module("guest_disk", disk_args(sandbox, base, guest))
    assert second["changed"] is False and second["actions"] == []
    assert os.stat(path).st_mtime_ns == mtime


def test_grow_then_refuse_shrink(sandbox, base):
    guest = sandbox.guest_name()
    run_module("guest_disk", disk_args(sandbox, base, guest))
    path = os.path.join(sandbox.instances, guest, "disk")
    grown = run_module("guest_disk", disk_args(sandbox, base, guest, size="96M"), diff=True)
    assert grown["changed"] and grown["actions"] == ["grow"]
    assert grown["diff"]["before"]["virtual_size"] == 64 * MIB and grown["diff"]["after"]["virtual_size"] == 96 * MIB
    assert qemu_info(path, "qcow2")["virtual-size"] == 96 * MIB

    shrink = run_module("guest_disk", disk_args(sandbox, base, guest, size="64M"))
    assert shrink.get("failed") and "refusing to shrink" in shrink["msg"]
    assert qemu_info(path, "qcow2")["virtual-size"] == 96 * MIB


def test_flat_raw_copy_grown_to_size(sandbox, base):
    with open(base, "r+b") as handle:
        handle.write(b"BOOTSECTOR")
    guest = sandbox.guest_name()
    result = run_module("guest_disk", disk_args(sandbox, base, guest, backing="flat", format="raw"))
    assert result["changed"] and result["actions"] == ["create", "grow"], result
    path = os.path.join(sandbox.instances, guest, "disk")
    assert os.path.getsize(path) == 64 * MIB
    with open(path, "rb") as handle:
        assert handle.read(10) == b"BOOTSECTOR"
    assert "backing-filename" not in qemu_info(path, "raw")


def test_check_mode_predicts_and_writes_nothing(sandbox, base):
    guest = sandbox.guest_name()
    result = run_module("guest_disk", disk_args(sandbox, base, guest), check=True, diff=True)
    assert result["changed"] is True and result["actions"] == ["create"]
    assert result["diff"]["before"]["exists"] is False
    assert not os.path.exists(os.path.join(sandbox.instances, guest))


@pytest.mark.parametrize("case,extra,expected", [
    ("base larger than size", {"size": "16M"}, "larger than the requested root disk size"),
    ("missing base", {"base": "/nonexistent/base.raw"}, "does not exist"),
    ("raw overlay", {"format": "raw"}, "overlay root disk is always qcow2"),
    ("bad size", {"size": "12 parsecs"}, "unknown unit"),
    ("hostile name", {"guest": "../../etc"}, "invalid guest name"),
])
def test_refusals_are_clear_and_leave_nothing(sandbox, base, case, extra, expected):
    guest = sandbox.guest_name()
    args = disk_args(sandbox, base, guest)
    args.update(extra)
    result = run_module("guest_disk", args)
    assert result.get("failed"), case
    assert expected in result["msg"]
    assert "Traceback" not in result["msg"]
    assert not os.path.exists(os.path.join(sandbox.instances, guest))


def test_disk_without_format_record_is_never_probed(sandbox, base):
    """CVE-2026-24708: a guest that wrote a qcow2 header into its raw disk must not change how we treat it."""
    guest = sandbox.guest_name()
    run_module("guest_disk", disk_args(sandbox, base, guest, backing="flat", format="raw"))
    os.unlink(os.path.join(sandbox.instances, guest, "disk.info.json"))
    result = run_module("guest_disk", disk_args(sandbox, base, guest, backing="flat", format="raw", size="96M"))
    assert result.get("failed") and "no format record" in result["msg"]
    assert os.path.getsize(os.path.join(sandbox.instances, guest, "disk")) == 64 * MIB


# ---------------------------------------------------------------------------------------------
# Every kind, booted: the guest reports what it sees
# ---------------------------------------------------------------------------------------------

from tests.integration.conftest import wait_for_report  # noqa: E402

ROOT_SIZE = 48 * MIB
EPHEMERAL_SIZE = 64 * MIB
SWAP_SIZE = 32 * MIB
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5bWF0ZXJpYWxmb3J2aXJ0ZmxlZXQ test@virtfleet"
USER_DATA = "#cloud-config\nhostname: vf-test\nruncmd: [echo s3cr3t-user-data]\n"
ADMIN_PASS = "Adm1n-pa55-not-for-logs"


@pytest.fixture
def guest_base(sandbox, guest_image):
    """The test guest image as a cached raw base, with the record image_cache writes next to it."""
    base_dir = os.path.join(sandbox.instances, "_base")
    os.makedirs(base_dir, exist_ok=True)
    path = os.path.join(base_dir, "guest-image")
    shutil.copyfile(guest_image["path"], path)
    with open(path + ".info.json", "w") as handle:
        json.dump({"format": "raw"}, handle)
    return path


def gd(sandbox, guest, check=False, diff=False, **args):
    args = dict(args, guest=guest, instances_path=sandbox.instances)
    return run_module("guest_disk", args, check=check, diff=diff)


def config_drive_args(drive_format, mode="once"):
    args = {"kind": "config_drive", "format": drive_format, "hostname": "vf-host", "public_keys": {"test": SSH_KEY},
            "user_data": USER_DATA, "extra_files": {"virtfleet/mode": mode}}
    if drive_format == "config-2":
        args.update(admin_pass=ADMIN_PASS, files=[{"path": "/etc/motd", "content": "hello from virtfleet\n"}],
                    network_data={"links": [], "networks": [], "services": []}, metadata={"role": "web"})
    return args


def build_guest(sandbox, guest, guest_base, drive_format="config-2", root=None, mode="once"):
    """Every disk of a guest by guest_disk, then its XML by domain_xml; returns (disk results, xml args)."""
    root = root or {"backing": "overlay"}
    results = {
        "root": gd(sandbox, guest, kind="root", base=guest_base, size=str(ROOT_SIZE), **root),
        "ephemeral": gd(sandbox, guest, kind="ephemeral", size="64M", fs_type="ext4"),
        "swap": gd(sandbox, guest, kind="swap", size="32M"),
        "config": gd(sandbox, guest, **config_drive_args(drive_format, mode)),
    }
    for name, result in results.items():
        assert result["_rc"] == 0 and result["changed"], (name, result)
    disks = [dict(results["root"]["xml_disk"], boot_order=1), results["ephemeral"]["xml_disk"],
             results["swap"]["xml_disk"], dict(results["config"]["xml_disk"], bus="ide")]
    owned = [f for r in results.values() for f in r["owned_files"]]
    xml_args = {"name": guest, "vcpus": 1, "memory": "160M", "virt_type": "qemu", "instances_path": sandbox.instances,
                "disks": disks, "metadata": {"owned_files": owned}}
    xml = run_module("domain_xml", xml_args)
    assert xml["_rc"] == 0, xml
    return results, xml["path"]


def boot(sandbox, guest, xml_file):
    started = run_module("domain", {"name": guest, "state": "running", "xml_file": xml_file,
                                    "instances_path": sandbox.instances})
    assert started["_rc"] == 0, started
    return os.path.join(sandbox.instances, guest, "console.log")


def expected_drive_files(drive_format):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as _config_drive

    return _config_drive.drive_files(dict(config_drive_args(drive_format), guest="x", drive_format=drive_format))


def assert_guest_sees_its_disks(report, drive_format, guest):
    assert report.disk_size("vda") == ROOT_SIZE, report.disks
    assert report.filesystems["vdb"] == {"type": "ext4", "label": "ephemeral0"}, report.filesystems
    assert report.disk_size("vdb") == EPHEMERAL_SIZE
    assert "vdc" in report.swaps, report.swaps
    assert report.disk_size("vdc") == SWAP_SIZE
    label = {"config-2": "config-2", "nocloud": "cidata"}[drive_format]
    assert report.configdrive and report.configdrive["label"] == label, report.configdrive
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as _config_drive

    wanted = _config_drive.drive_files(dict(config_drive_args(drive_format), guest=guest, drive_format=drive_format))
    assert sorted(report.cdfiles) == sorted(wanted)
    for path, content in wanted.items():
        assert report.cdfile_bytes(path) == content, path
    if drive_format == "config-2":
        meta = json.loads(report.cdfile_bytes("openstack/latest/meta_data.json"))
        assert meta["public_keys"] == {"test": SSH_KEY} and meta["hostname"] == "vf-host"
        assert meta["admin_pass"] == ADMIN_PASS and meta["name"] == guest
        assert report.cdfile_bytes("openstack/latest/user_data") == USER_DATA.encode()
        assert report.cdfile_bytes("openstack/content/0000") == b"hello from virtfleet\n"
        assert meta["files"] == [{"path": "/etc/motd", "content_path": "/content/0000"}]
    else:
        assert report.cdfile_bytes("user-data") == USER_DATA.encode()
        assert SSH_KEY in report.cdfile_bytes("meta-data").decode()


@pytest.mark.parametrize("drive_format,root", [
    ("config-2", {"backing": "overlay"}),
    ("nocloud", {"backing": "overlay"}),
    ("config-2", {"backing": "flat", "format": "raw"}),
], ids=["config-2-overlay", "nocloud-overlay", "config-2-flat-raw"])
def test_booted_guest_sees_root_ephemeral_swap_and_config_drive(sandbox, guest_base, drive_format, root):
    guest = sandbox.guest_name()
    results, xml_file = build_guest(sandbox, guest, guest_base, drive_format, root)
    config = os.path.join(sandbox.instances, guest, "disk.config")
    assert oct(os.stat(config).st_mode & 0o777) == "0o600" and os.stat(config).st_uid == 0
    # issue 10 item 14: no disk holds guest data world-readable; libvirt's dynamic_ownership lets qemu in
    for kind, result in results.items():
        st = os.stat(result["path"])
        assert (oct(st.st_mode & 0o777), st.st_uid) == ("0o600", 0), kind
    console = boot(sandbox, guest, xml_file)
    report = wait_for_report(console)
    assert report.mode == "once"
    assert_guest_sees_its_disks(report, drive_format, guest)
    # qemu (user libvirt-qemu) read the 0600 root-owned drive: libvirt chowned it at start. libvirt does not
    # restore the owner of read-only disks at stop, so it stays with the qemu user, still 0600, and a second
    # run (which does not enforce an owner unless asked) changes nothing.
    dom = sandbox.conn.lookupByName(guest)
    deadline = time.monotonic() + 60
    while dom.isActive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert oct(os.stat(config).st_mode & 0o777) == "0o600"
    assert pwd.getpwuid(os.stat(config).st_uid).pw_name in ("root", "libvirt-qemu")
    again = gd(sandbox, guest, **config_drive_args(drive_format))
    assert again["changed"] is False, again
    # nothing in any output holds a secret (public keys are not secret: issue 10 item 6)
    for result in results.values():
        text = json.dumps(result)
        for secret in (ADMIN_PASS, "s3cr3t-user-data"):
            assert secret not in text


# ---------------------------------------------------------------------------------------------
# Idempotency, check mode, diff mode
# ---------------------------------------------------------------------------------------------

KIND_ARGS = {
    "ephemeral-ext4": {"kind": "ephemeral", "size": "64M"},
    "ephemeral-vfat-raw": {"kind": "ephemeral", "size": "64M", "fs_type": "vfat", "label": "EPH0", "format": "raw"},
    "ephemeral-xfs": {"kind": "ephemeral", "size": "320M", "fs_type": "xfs", "label": "data"},
    "swap": {"kind": "swap", "size": "32M", "label": "swap0"},
    "blank-qcow2": {"kind": "blank", "size": "32M"},
    "blank-raw-falloc": {"kind": "blank", "size": "8M", "format": "raw", "preallocation": "falloc"},
    "config-2": config_drive_args("config-2"),
    "nocloud": config_drive_args("nocloud"),
}


def instance_mtimes(sandbox, guest):
    directory = os.path.join(sandbox.instances, guest)
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in sorted(os.listdir(directory))}


@pytest.mark.parametrize("case", sorted(KIND_ARGS))
def test_every_kind_check_then_create_then_nothing(sandbox, case):
    guest = sandbox.guest_name()
    args = KIND_ARGS[case]
    predicted = gd(sandbox, guest, check=True, diff=True, **args)
    assert predicted["_rc"] == 0 and predicted["changed"], predicted
    assert predicted["diff"]["before"]["exists"] is False and predicted["diff"]["after"]["exists"] is True
    assert not os.path.exists(os.path.join(sandbox.instances, guest))
    assert not os.path.exists(os.path.join(sandbox.instances, "_base"))

    done = gd(sandbox, guest, diff=True, **args)
    assert done["_rc"] == 0, done
    assert done["actions"] == predicted["actions"] and done["diff"] == predicted["diff"]
    path = done["path"]
    assert os.path.isfile(path)
    record = json.load(open(os.path.join(sandbox.instances, guest, "disk.info.json")))
    assert record[os.path.basename(path)]["format"] == done["format"]
    mtimes = instance_mtimes(sandbox, guest)

    again = gd(sandbox, guest, diff=True, **args)
    assert again["changed"] is False and again["actions"] == [], again
    assert again["diff"]["before"] == again["diff"]["after"]
    assert instance_mtimes(sandbox, guest) == mtimes
    checked = gd(sandbox, guest, check=True, **args)
    assert checked["changed"] is False


def test_formatted_bases_are_shared_between_guests(sandbox):
    first, second = sandbox.guest_name(), sandbox.guest_name()
    one = gd(sandbox, first, kind="ephemeral", size="64M")
    base = one["base"]
    assert one["actions"] == ["create_base", "create"] and os.path.basename(base) == "ephemeral_64M_ext4_ephemeral0"
    assert json.load(open(base + ".info.json"))["format"] == "raw"
    base_mtime = os.stat(base).st_mtime_ns
    two = gd(sandbox, second, kind="ephemeral", size="64M")
    assert two["actions"] == ["create"] and two["backing_file"] == base
    assert os.stat(base).st_mtime_ns == base_mtime
    info = qemu_info(two["path"], "qcow2")
    assert info["backing-filename"] == base and info["backing-filename-format"] == "raw"
    # a different label is a different base
    three = gd(sandbox, second, kind="ephemeral", size="64M", label="other", file_name="disk.other")
    assert three["actions"] == ["create_base", "create"] and three["base"].endswith("ephemeral_64M_ext4_other")
    swap = gd(sandbox, first, kind="swap", size="32M")
    assert os.path.basename(swap["base"]) == "swap_32M"
    with open(swap["base"], "rb") as handle:
        handle.seek(4086)
        assert handle.read(10) == b"SWAPSPACE2"


def test_config_drive_rebuilt_only_when_content_changes(sandbox):
    guest = sandbox.guest_name()
    args = config_drive_args("config-2")
    first = gd(sandbox, guest, **args)
    path = first["path"]
    mtime = os.stat(path).st_mtime_ns
    assert gd(sandbox, guest, **args)["changed"] is False
    assert os.stat(path).st_mtime_ns == mtime

    changed = dict(args)
    changed["user_data"] = USER_DATA + "# more\n"
    predicted = gd(sandbox, guest, check=True, diff=True, **changed)
    assert predicted["actions"] == ["rebuild"] and os.stat(path).st_mtime_ns == mtime
    rebuilt = gd(sandbox, guest, **changed)
    assert rebuilt["actions"] == ["rebuild"]
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk import config_drive as _config_drive

    assert _config_drive.read_iso(path)["openstack/latest/user_data"] == (USER_DATA + "# more\n").encode()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    to_nocloud = gd(sandbox, guest, **config_drive_args("nocloud"))
    assert to_nocloud["actions"] == ["rebuild"] and _config_drive.volume_label(path) == "cidata"


def test_mode_and_owner_are_enforced_and_predicted(sandbox):
    guest = sandbox.guest_name()
    created = gd(sandbox, guest, kind="blank", size="8M", mode="0640")
    assert oct(os.stat(created["path"]).st_mode & 0o777) == "0o640"
    predicted = gd(sandbox, guest, check=True, diff=True, kind="blank", size="8M", mode="0600", owner="libvirt-qemu")
    assert predicted["actions"] == ["chmod", "chown"]
    assert predicted["diff"]["after"]["mode"] == "0600" and predicted["diff"]["after"]["owner"] == "libvirt-qemu"
    assert oct(os.stat(created["path"]).st_mode & 0o777) == "0o640"
    done = gd(sandbox, guest, kind="blank", size="8M", mode="0600", owner="libvirt-qemu")
    assert done["actions"] == ["chmod", "chown"]
    st = os.stat(created["path"])
    assert oct(st.st_mode & 0o777) == "0o600" and pwd.getpwuid(st.st_uid).pw_name == "libvirt-qemu"
    assert gd(sandbox, guest, kind="blank", size="8M", mode="0600", owner="libvirt-qemu")["changed"] is False


def test_blank_grows_and_refuses_to_shrink(sandbox):
    guest = sandbox.guest_name()
    gd(sandbox, guest, kind="blank", size="16M")
    grown = gd(sandbox, guest, kind="blank", size="32M")
    assert grown["actions"] == ["grow"] and qemu_info(grown["path"], "qcow2")["virtual-size"] == 32 * MIB
    shrink = gd(sandbox, guest, kind="blank", size="16M")
    assert shrink.get("failed") and "refusing to shrink" in shrink["msg"]
    assert qemu_info(grown["path"], "qcow2")["virtual-size"] == 32 * MIB


# ---------------------------------------------------------------------------------------------
# Refusals: clear message, nothing changed
# ---------------------------------------------------------------------------------------------

def test_ephemeral_is_never_resized_nor_reformatted_in_place(sandbox):
    guest = sandbox.guest_name()
    made = gd(sandbox, guest, kind="ephemeral", size="64M")
    mtimes = instance_mtimes(sandbox, guest)
    for extra, words in (({"size": "32M"}, "refusing to shrink"), ({"size": "128M"}, "refusing to grow"),
                         ({"size": "64M", "fs_type": "vfat"}, "refusing to reformat"),
                         ({"size": "64M", "label": "other"}, "refusing to reformat")):
        result = gd(sandbox, guest, **dict({"kind": "ephemeral"}, **extra))
        assert result.get("failed") and words in result["msg"], (extra, result)
        assert instance_mtimes(sandbox, guest) == mtimes
    assert qemu_info(made["path"], "qcow2")["virtual-size"] == 64 * MIB


def test_missing_mkfs_tool_is_named_and_nothing_is_written(sandbox, monkeypatch, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("qemu-img", "mkfs.ext4", "mke2fs", "mkswap"):
        found = shutil.which(tool)
        if found:
            os.symlink(found, str(bindir / tool))
    monkeypatch.setenv("PATH", str(bindir))
    guest = sandbox.guest_name()
    for check in (True, False):
        result = gd(sandbox, guest, check=check, kind="ephemeral", size="320M", fs_type="xfs", label="data")
        assert result.get("failed"), result
        assert "mkfs.xfs is not installed" in result["msg"] and "xfsprogs" in result["msg"]
        assert not os.path.exists(os.path.join(sandbox.instances, guest))
        assert not os.path.exists(os.path.join(sandbox.instances, "_base", "ephemeral_320M_xfs_data"))
    assert gd(sandbox, guest, kind="ephemeral", size="64M")["changed"] is True  # ext4 is still there


@pytest.mark.parametrize("case,args,words", [
    ("xfs too small", {"kind": "ephemeral", "size": "64M", "fs_type": "xfs"}, "smaller than 300 MB"),
    ("label too long", {"kind": "ephemeral", "size": "64M", "fs_type": "vfat", "label": "waytoolonglabel"},
     "too long for vfat"),
    ("ephemeral without size", {"kind": "ephemeral"}, "needs size"),
    ("odd size", {"kind": "blank", "size": "1000001"}, "multiple of 512"),
    ("iso as qcow2", {"kind": "config_drive", "format": "qcow2"}, "config-2"),
    ("nocloud admin_pass", {"kind": "config_drive", "format": "nocloud", "admin_pass": "x"}, "config-2 format"),
    ("drive path escape", {"kind": "config_drive", "extra_files": {"../etc/passwd": "x"}}, "invalid config drive path"),
    ("bad mode", {"kind": "blank", "size": "8M", "mode": "rwx"}, "octal"),
    ("bad owner", {"kind": "blank", "size": "8M", "owner": "no-such-user-vf"}, "not a user"),
    ("file name path", {"kind": "blank", "size": "8M", "file_name": "../x"}, "invalid file_name"),
])
def test_option_refusals(sandbox, case, args, words):
    guest = sandbox.guest_name()
    result = gd(sandbox, guest, **args)
    assert result.get("failed") and words in result["msg"], (case, result)
    assert "Traceback" not in result["msg"]
    assert not os.path.exists(os.path.join(sandbox.instances, guest))


def test_disk_in_use_by_running_guest_and_absent_on_referenced_disk(sandbox, guest_base):
    guest = sandbox.guest_name()
    results, xml_file = build_guest(sandbox, guest, guest_base, "config-2", mode="stay")
    console = boot(sandbox, guest, xml_file)
    wait_for_report(console)
    root = results["root"]["path"]
    mtimes = instance_mtimes(sandbox, guest)
    del mtimes["console.log"]

    for check in (True, False):
        grow = gd(sandbox, guest, check=check, kind="root", base=guest_base, size="96M")
        assert grow.get("failed") and "a running guest holds it" in grow["msg"], grow
    assert qemu_info(root, "qcow2")["virtual-size"] == ROOT_SIZE

    for kind in ("root", "ephemeral", "config_drive"):
        refused = gd(sandbox, guest, kind=kind, state="absent")
        assert refused.get("failed") and "still used by the defined libvirt domain" in refused["msg"], refused
        assert guest in refused["msg"] and refused["referenced_by"] == [guest]
    now = instance_mtimes(sandbox, guest)
    del now["console.log"]
    assert now == mtimes

    run_module("domain", {"name": guest, "state": "shutdown", "instances_path": sandbox.instances,
                          "xml_file": xml_file})
    still = gd(sandbox, guest, kind="swap", state="absent")
    assert still.get("failed") and "still used" in still["msg"], "a defined, stopped domain still references it"
    forced = gd(sandbox, guest, kind="swap", state="absent", force=True, check=True)
    assert forced["changed"] and forced["actions"] == ["remove"] and os.path.exists(results["swap"]["path"])
    forced = gd(sandbox, guest, kind="swap", state="absent", force=True)
    assert forced["actions"] == ["remove"] and not os.path.exists(results["swap"]["path"])
    record = json.load(open(os.path.join(sandbox.instances, guest, "disk.info.json")))
    assert "disk.swap" not in record and "disk.local" in record
    assert gd(sandbox, guest, kind="swap", state="absent")["changed"] is False


def test_absent_on_unreferenced_disks(sandbox):
    guest = sandbox.guest_name()
    gd(sandbox, guest, kind="blank", size="8M")
    drive = gd(sandbox, guest, **config_drive_args("nocloud"))
    for kind in ("blank", "config_drive"):
        predicted = gd(sandbox, guest, check=True, diff=True, kind=kind, state="absent")
        assert predicted["actions"] == ["remove"] and predicted["diff"]["after"]["exists"] is False
        removed = gd(sandbox, guest, kind=kind, state="absent")
        assert removed["actions"] == ["remove"]
    assert sorted(os.listdir(os.path.join(sandbox.instances, guest))) == ["disk.info.json"]
    assert json.load(open(os.path.join(sandbox.instances, guest, "disk.info.json"))) == {}
    assert not os.path.exists(drive["path"])


def test_secrets_never_in_ansible_playbook_vvv_output(sandbox):
    """Run the module through ansible-playbook -vvv (diff on, then a change): no secret in stdout or stderr."""
    from tests.support.runner import PYTHON, run_playbook

    guest = sandbox.guest_name()
    inventory = os.path.join(sandbox.root, "inventory.yml")
    with open(inventory, "w") as handle:
        hosts = {"hypervisor": {"ansible_connection": "local", "ansible_python_interpreter": PYTHON}}
        json.dump({"all": {"hosts": hosts}}, handle)
    playbook = os.path.join(sandbox.root, "play.yml")
    task = dict(config_drive_args("config-2"), guest=guest, instances_path=sandbox.instances)
    plays = [{"hosts": "hypervisor", "gather_facts": False, "tasks": [
        {"name": "config drive", "virtfleet.libvirt.guest_disk": task, "register": "drive"},
        {"name": "config drive again, changed", "virtfleet.libvirt.guest_disk": dict(task, user_data=USER_DATA + "#2\n")},
        {"name": "show", "debug": {"var": "drive"}},
    ]}]
    with open(playbook, "w") as handle:
        json.dump(plays, handle)
    run = run_playbook(playbook, inventory, diff=True, verbosity=3)
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.changed() == 2
    output = run.stdout + run.stderr
    for secret in (ADMIN_PASS, "s3cr3t-user-data", "hello from virtfleet"):  # public keys are not secret
        assert secret not in output, secret
    assert '"path": "%s"' % os.path.join(sandbox.instances, guest, "disk.config") in output  # never masked
    assert "openstack/latest/user_data" in output  # the file list is shown, not the content


# ---------------------------------------------------------------------------------------------
# A full filesystem (issue 10 item 7): a clear message, nothing half-made, a record that tells the truth
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def small_fs(sandbox):
    """An 8 MiB tmpfs mounted for the test (root), and a way to leave exactly some bytes free on it."""
    path = os.path.join(sandbox.root, "small")
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M,mode=0755", "tmpfs", path], check=True)
    filler = os.path.join(path, "filler")

    def leave_free(num_bytes):
        remove_filler()
        info = os.statvfs(path)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, info.f_bavail * info.f_frsize - num_bytes)
        finally:
            os.close(fd)
        info = os.statvfs(path)
        assert info.f_bavail * info.f_frsize == num_bytes

    def remove_filler():
        if os.path.exists(filler):
            os.unlink(filler)

    box = type("SmallFs", (), {})()
    box.path, box.instances, box.leave_free, box.remove_filler = path, os.path.join(path, "instances"), \
        leave_free, remove_filler
    os.makedirs(os.path.join(box.instances, "locks"))
    yield box
    subprocess.run(["umount", "-l", path], check=False)


def assert_clean_failure(result, path, words):
    assert result.get("failed") and result["_rc"] != 0, result
    assert words in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"] and "internal error" not in result["msg"], result["msg"]
    assert path in result["msg"]
    directory = os.path.dirname(path)
    left = os.listdir(directory) if os.path.isdir(directory) else []
    assert os.path.basename(path) not in left and not [n for n in left if "virtfleet-tmp" in n], left


def test_a_disk_that_fits_when_its_record_does_not_leaves_nothing_and_records_nothing(sandbox, small_fs):
    guest = sandbox.guest_name()
    path = os.path.join(small_fs.instances, guest, "disk.blank")
    os.makedirs(os.path.dirname(path))
    small_fs.leave_free(200704)  # exactly what qemu-img's 8 MiB qcow2 takes; nothing for its record
    args = {"guest": guest, "kind": "blank", "size": "8M", "instances_path": small_fs.instances}
    result = run_module("guest_disk", args)
    assert_clean_failure(result, path, "is full")
    assert "it needs about" in result["msg"]
    info = os.path.join(os.path.dirname(path), "disk.info.json")
    assert not os.path.exists(info) or guest not in open(info).read()
    small_fs.remove_filler()
    again = run_module("guest_disk", args)
    assert again["_rc"] == 0 and again["actions"] == ["create"], again
    assert json.load(open(info))["disk.blank"]["format"] == "qcow2"


def test_a_config_drive_on_a_full_filesystem_fails_clearly(sandbox, small_fs):
    guest = sandbox.guest_name()
    path = os.path.join(small_fs.instances, guest, "disk.config")
    os.makedirs(os.path.dirname(path))
    small_fs.leave_free(8 * 4096)
    args = dict(config_drive_args("config-2"), guest=guest, instances_path=small_fs.instances)
    result = run_module("guest_disk", args)
    assert_clean_failure(result, path, "is full")
    assert not os.path.exists(path + ".digest.json")
    small_fs.remove_filler()
    assert run_module("guest_disk", args)["actions"] == ["create"]


def test_a_flat_copy_larger_than_the_free_space_fails_clearly(sandbox, small_fs):
    base = os.path.join(sandbox.root, "data-base.raw")
    with open(base, "wb") as handle:
        handle.write(os.urandom(6 * MIB))
        handle.truncate(16 * MIB)
    guest = sandbox.guest_name()
    small_fs.leave_free(2 * MIB)
    path = os.path.join(small_fs.instances, guest, "disk")
    result = run_module("guest_disk", {"guest": guest, "kind": "root", "base": base, "base_format": "raw",
                                       "backing": "flat", "format": "raw", "instances_path": small_fs.instances})
    assert_clean_failure(result, path, "is full")
    assert "it needs about 6 MiB" in result["msg"]


# ---------------------------------------------------------------------------------------------
# kill -9 in the middle of a flat copy (issue 10 item 8)
# ---------------------------------------------------------------------------------------------

def test_kill_9_during_a_flat_copy_takes_qemu_img_along_and_the_next_run_cleans_up(sandbox):
    from tests.support.processes import children_named, is_running
    from tests.support.runner import COLLECTIONS, PYTHON, module_path

    base_dir = os.path.join(sandbox.instances, "_base")
    os.makedirs(base_dir)
    base = os.path.join(base_dir, "big.raw")
    block = os.urandom(MIB)
    with open(base, "wb") as handle:
        for _mib in range(1536):
            handle.write(block)
    with open(base + ".info.json", "w") as handle:
        json.dump({"format": "raw"}, handle)
    guest = sandbox.guest_name()
    args = {"guest": guest, "kind": "root", "base": base, "base_format": "raw", "backing": "flat", "format": "raw",
            "size": "2G", "instances_path": sandbox.instances}
    args_file = os.path.join(sandbox.root, "args.json")
    with open(args_file, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_module_name="virtfleet.libvirt.guest_disk")}, handle)
    proc = subprocess.Popen([PYTHON, module_path("guest_disk"), args_file], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    instance_dir = os.path.join(sandbox.instances, guest)
    orphans = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not children_named(proc.pid, "qemu-img"):
            time.sleep(0.01)
        copying = children_named(proc.pid, "qemu-img")
        assert copying, "qemu-img never started"
        time.sleep(0.2)
        proc.kill()
        proc.wait(10)
        # The copy takes seconds more; a child that dies with the module is gone at once.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and any(is_running(pid) for pid in copying):
            time.sleep(0.02)
        orphans = [pid for pid in copying if is_running(pid)]
        assert orphans == [], "qemu-img kept copying after the module was killed"
        temps = [name for name in os.listdir(instance_dir) if "virtfleet-tmp" in name]
        assert temps, "the killed copy left no temporary file (did it finish before the kill?)"
        assert "disk" not in os.listdir(instance_dir)

        again = run_module("guest_disk", args)
        assert again["_rc"] == 0 and again["actions"] == ["create", "grow"], again
        left = sorted(os.listdir(instance_dir))
        assert left == ["disk", "disk.info.json"], left
        assert os.path.getsize(os.path.join(instance_dir, "disk")) == 2 << 30
    finally:
        for pid in orphans:
            os.kill(pid, 9)
