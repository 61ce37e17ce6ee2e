"""domain_xml's core (_domain/xml_file.py): the file it writes, the UUID it keeps, and its re-run record.

libvirt's answers (domain capabilities, an existing domain's UUID) come from a small stand-in: the logic here is
what the file holds and when it is rewritten, not libvirt.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import uuid as uuidlib

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_file

CAPS = ("<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>qemu</domain>"
        "<machine>pc-i440fx-7.2</machine><arch>x86_64</arch></domainCapabilities>")
FIXED_UUID = "6f1c2b6e-94b3-4f7e-9a57-0c1e4c1b9d11"


class FakeGuest:
    def __init__(self, uuid):
        self.uuid = uuid


class FakeHypervisor:
    """What domain_xml asks libvirt: domain capabilities, and the UUID of a domain already defined."""

    def __init__(self, caps=CAPS, defined=None):
        self.caps = caps
        self.defined = defined or {}
        self.capability_queries = 0

    def lookup(self, name):
        return FakeGuest(self.defined[name]) if name in self.defined else None

    def domain_capabilities(self, machine, virt_type, arch="x86_64"):
        self.capability_queries += 1
        return self.caps

    def capabilities(self):
        return "<capabilities/>"

    def lib_version(self):
        return 9000000


def params(tmp_path, **extra):
    base = {"name": "web1", "instances_path": str(tmp_path), "vcpus": 1, "memory": "256M", "virt_type": "qemu",
            "machine": "pc", "firmware": "bios", "disks": [{"path": str(tmp_path / "web1" / "disk"),
                                                           "format": "qcow2"}]}
    base.update(extra)
    return base


def run(tmp_path, hypervisor=None, check_mode=False, **extra):
    return xml_file.ensure_domain_xml(params(tmp_path, **extra), check_mode=check_mode,
                                      hypervisor=hypervisor or FakeHypervisor())


def test_first_run_writes_the_definition_into_the_instance_directory(tmp_path):
    old_umask = os.umask(0o077)
    try:
        result = run(tmp_path)
    finally:
        os.umask(old_umask)
    path = tmp_path / "web1" / "domain.xml"
    assert result["changed"] is True and result["path"] == str(path)
    assert path.read_text() == result["xml"]
    assert "<name>web1</name>" in result["xml"] and "<uuid>%s</uuid>" % result["uuid"] in result["xml"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "web1").stat().st_mode) == 0o755  # qemu traverses it, whatever the umask
    assert (result["virt_type"], result["machine"]) == ("qemu", "pc-i440fx-7.2")
    assert result["owned_files"] == [str(path), str(tmp_path / "web1" / "console.log")]
    assert len(result["macs"]) == 0
    assert result["diff"] == {"before": "", "after": result["xml"], "before_header": "%s (absent)" % path,
                              "after_header": str(path)}
    assert str(uuidlib.UUID(result["uuid"])) == result["uuid"]


def test_a_second_identical_run_changes_nothing_and_keeps_the_uuid(tmp_path):
    first = run(tmp_path)
    mtime = os.stat(first["path"]).st_mtime_ns
    again = run(tmp_path)
    assert again["changed"] is False and again["uuid"] == first["uuid"] and again["xml"] == first["xml"]
    assert os.stat(first["path"]).st_mtime_ns == mtime
    assert again["diff"]["before"] == again["diff"]["after"] and again["diff"]["before_header"] == first["path"]


def test_check_mode_predicts_and_writes_nothing(tmp_path):
    predicted = run(tmp_path, check_mode=True)
    assert predicted["changed"] is True
    assert not os.path.exists(tmp_path / "web1")
    written = run(tmp_path, vcpus=1)
    assert written["changed"] is True
    changed = run(tmp_path, check_mode=True, vcpus=2)
    assert changed["changed"] is True and "<vcpu placement=\"static\">2</vcpu>" in changed["xml"]
    assert open(written["path"]).read() == written["xml"]


def test_a_changed_option_rewrites_the_file(tmp_path):
    first = run(tmp_path, vcpus=1)
    second = run(tmp_path, vcpus=2)
    assert second["changed"] is True and second["uuid"] == first["uuid"]
    assert open(second["path"]).read() == second["xml"] != first["xml"]
    assert second["diff"]["before"] == first["xml"]


def test_the_uuid_comes_from_the_option_then_the_file_then_libvirt_then_is_new(tmp_path):
    assert run(tmp_path, uuid=FIXED_UUID)["uuid"] == FIXED_UUID
    assert run(tmp_path)["uuid"] == FIXED_UUID                                 # kept from the file
    os.unlink(tmp_path / "web1" / "domain.xml")
    defined = FakeHypervisor(defined={"web1": "0a2d9c3e-1f4b-4c5d-8e6f-7a8b9c0d1e2f"})
    assert run(tmp_path, hypervisor=defined)["uuid"] == "0a2d9c3e-1f4b-4c5d-8e6f-7a8b9c0d1e2f"  # libvirt's
    os.unlink(tmp_path / "web1" / "domain.xml")
    fresh = run(tmp_path)["uuid"]
    assert fresh not in (FIXED_UUID, "0a2d9c3e-1f4b-4c5d-8e6f-7a8b9c0d1e2f")


@pytest.mark.parametrize("broken", [b"<domain", b"<domain><uuid>not-a-uuid</uuid></domain>", b"", b"<domain/>"])
def test_a_broken_or_uuid_less_file_is_replaced_with_a_new_uuid(tmp_path, broken):
    os.makedirs(tmp_path / "web1")
    (tmp_path / "web1" / "domain.xml").write_bytes(broken)
    result = run(tmp_path)
    assert result["changed"] is True
    assert str(uuidlib.UUID(result["uuid"])) == result["uuid"]
    assert open(result["path"], "rb").read() == result["xml"].encode()


def test_a_uuid_in_the_file_is_spelled_canonically(tmp_path):
    os.makedirs(tmp_path / "web1")
    (tmp_path / "web1" / "domain.xml").write_text("<domain><name>web1</name><uuid>%s</uuid></domain>"
                                                  % FIXED_UUID.upper().replace("-", ""))
    assert run(tmp_path)["uuid"] == FIXED_UUID


def test_path_option_and_its_rules(tmp_path):
    target = tmp_path / "elsewhere" / "web1.xml"
    result = run(tmp_path, path=str(target))
    assert result["path"] == str(target) and target.read_text() == result["xml"]
    assert not os.path.exists(tmp_path / "web1" / "domain.xml")
    with pytest.raises(VirtfleetError, match=r"^path must be an absolute path, got 'rel\.xml'$"):
        run(tmp_path, path="rel.xml")
    assert xml_file.output_path(params(tmp_path)) == str(tmp_path / "web1" / "domain.xml")
    assert xml_file.output_path(params(tmp_path, instance_dir=str(tmp_path / "d"))) == str(tmp_path / "d"
                                                                                           / "domain.xml")


def test_a_bad_guest_name_is_refused_before_any_path_is_made(tmp_path):
    with pytest.raises(VirtfleetError, match=r"^invalid guest name '\.\./x'"):
        xml_file.ensure_domain_xml(params(tmp_path, name="../x"), hypervisor=FakeHypervisor())
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_read_is_a_clear_error(tmp_path):
    (tmp_path / "web1").write_text("a file where the instance directory should be")
    with pytest.raises(VirtfleetError, match=r"^cannot read the existing domain XML %s/web1/domain\.xml: Not a "
                       r"directory$" % tmp_path):
        run(tmp_path)


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno

    def full(path, data, mode):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(xml_file, "write_file_atomic", full)
    with pytest.raises(VirtfleetError, match=r"^cannot write the domain XML %s/web1/domain\.xml: No space left on "
                       r"device$" % tmp_path):
        run(tmp_path)
    assert os.listdir(tmp_path / "web1") == []


def test_the_instance_directory_is_made_traversable_even_when_it_exists_not(tmp_path):
    nested = tmp_path / "deep" / "er" / "web1.xml"
    old_umask = os.umask(0o077)
    try:
        run(tmp_path, path=str(nested))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "deep" / "er").stat().st_mode) == 0o755


def test_owned_files_include_the_variable_store_with_uefi(tmp_path):
    layout = xml_file.guest_layout(str(tmp_path), "web1")
    assert xml_file.owned_files(layout, "/x/domain.xml", False) == ["/x/domain.xml", layout.console_log]
    assert xml_file.owned_files(layout, "/x/domain.xml", True) == ["/x/domain.xml", layout.console_log,
                                                                   layout.nvram]


# --- the re-run record ----------------------------------------------------------------------------------------

def test_the_record_describes_the_file_it_was_written_with(tmp_path):
    result = run(tmp_path)
    record = xml_file.read_record(result["path"])
    assert record["version"] == xml_file.RECORD_VERSION == 1
    assert record["path"] == result["path"]
    assert record["sha256"] == hashlib.sha256(open(result["path"], "rb").read()).hexdigest()
    assert {k: record[k] for k in xml_file.RECORDED} == {k: result[k] for k in xml_file.RECORDED}
    key = xml_file.record_key(params(tmp_path), ("qemu", CAPS))
    assert record["key"] == key and len(key) == 64


def test_an_unchanged_rerun_answers_from_the_record_without_rendering(tmp_path, monkeypatch):
    first = run(tmp_path)
    monkeypatch.setattr(xml_file, "render_domain_xml", lambda *a, **k: pytest.fail("rendered again"))
    again = run(tmp_path)
    assert again["changed"] is False
    assert {k: again[k] for k in ("xml", "uuid", "virt_type", "machine", "macs", "owned_files")} == \
        {k: first[k] for k in ("xml", "uuid", "virt_type", "machine", "macs", "owned_files")}


@pytest.mark.parametrize("spoil", ["edit", "other_params", "other_caps", "other_code", "record_path", "bad_json",
                                   "old_version", "not_utf8"])
def test_anything_the_record_does_not_vouch_for_renders_again(tmp_path, monkeypatch, spoil):
    first = run(tmp_path)
    path = first["path"]
    hypervisor = FakeHypervisor()
    extra = {}
    if spoil == "edit":
        with open(path, "a") as handle:
            handle.write("<!-- edited -->")
    elif spoil == "other_params":
        extra = {"vcpus": 2}
    elif spoil == "other_caps":
        hypervisor = FakeHypervisor(caps=CAPS.replace("</arch>", "</arch><iothreads supported='yes'/>"))
    elif spoil == "other_code":
        monkeypatch.setattr(xml_file, "code_digest", lambda: "0" * 64)
    elif spoil == "record_path":
        record = xml_file.read_record(path)
        os.setxattr(path, xml_file.RECORD_XATTR, json.dumps(dict(record, path="/elsewhere")).encode())
    elif spoil == "bad_json":
        os.setxattr(path, xml_file.RECORD_XATTR, b"{not json")
    elif spoil == "old_version":
        record = xml_file.read_record(path)
        os.setxattr(path, xml_file.RECORD_XATTR, json.dumps(dict(record, version=0)).encode())
    elif spoil == "not_utf8":
        data = open(path, "rb").read() + b"\xff"
        with open(path, "wb") as handle:
            handle.write(data)
        record = xml_file.read_record(path)
        os.setxattr(path, xml_file.RECORD_XATTR, json.dumps(dict(record, sha256=hashlib.sha256(data).hexdigest()))
                    .encode())
    rendered = []
    real_render = xml_file.render_domain_xml

    def counting_render(*args, **kwargs):
        rendered.append(1)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(xml_file, "render_domain_xml", counting_render)
    again = xml_file.ensure_domain_xml(params(tmp_path, **extra), hypervisor=hypervisor)
    assert rendered == [1]
    assert open(path, encoding="utf-8").read() == again["xml"]
    assert again["changed"] is (spoil in ("edit", "other_params", "not_utf8"))
    if spoil != "other_code":
        assert xml_file.read_record(path)["key"] == xml_file.record_key(params(tmp_path, **extra),
                                                                        ("qemu", hypervisor.caps))


@pytest.mark.parametrize("field,value", [("uuid", 5), ("virt_type", None), ("machine", ["pc"]), ("macs", "x"),
                                         ("owned_files", None)])
def test_a_record_with_fields_of_the_wrong_kind_is_not_trusted(tmp_path, monkeypatch, field, value):
    first = run(tmp_path)
    record = xml_file.read_record(first["path"])
    os.setxattr(first["path"], xml_file.RECORD_XATTR, json.dumps(dict(record, **{field: value})).encode())
    assert xml_file._from_record(first["path"], record["key"], open(first["path"], "rb").read()) is None
    assert xml_file._from_record(first["path"], record["key"], None) is None
    assert xml_file._from_record(first["path"], None, b"") is None


def test_check_mode_writes_no_record(tmp_path):
    run(tmp_path)
    path = str(tmp_path / "web1" / "domain.xml")
    os.removexattr(path, xml_file.RECORD_XATTR)
    assert run(tmp_path, check_mode=True)["changed"] is False
    assert xml_file.read_record(path) is None
    assert run(tmp_path)["changed"] is False
    assert xml_file.read_record(path) is not None  # a real run records an unchanged file too


def test_uefi_and_odd_parameters_take_no_fast_path(tmp_path):
    hypervisor = FakeHypervisor()
    assert xml_file.host_answers(hypervisor, params(tmp_path, firmware="uefi")) is None
    assert xml_file.host_answers(hypervisor, params(tmp_path, machine=None)) is None
    assert xml_file.host_answers(hypervisor, params(tmp_path, virt_type="bogus")) is None
    assert hypervisor.capability_queries == 0
    assert xml_file.host_answers(hypervisor, params(tmp_path)) == ("qemu", CAPS)
    assert xml_file.record_key({"x": float("nan")}, ("qemu", CAPS)) is None
    assert xml_file.record_key({"x": object()}, ("qemu", CAPS)) is None
    one = xml_file.record_key(params(tmp_path), ("qemu", CAPS))
    assert one == xml_file.record_key(dict(reversed(list(params(tmp_path).items()))), ("qemu", CAPS))
    assert one != xml_file.record_key(params(tmp_path), ("kvm", CAPS))
    monkeypatch_code = xml_file.code_digest
    assert isinstance(monkeypatch_code(), str) and len(monkeypatch_code()) == 64


def test_no_record_key_without_the_code_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(xml_file, "code_digest", lambda: None)
    assert xml_file.record_key(params(tmp_path), ("qemu", CAPS)) is None
    result = run(tmp_path)
    assert result["changed"] is True and xml_file.read_record(result["path"]) is None
    assert run(tmp_path)["changed"] is False
