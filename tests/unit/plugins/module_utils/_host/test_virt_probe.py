"""virt_type auto must never pick a KVM that cannot run ordinary guests."""

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._host import virt_probe as probe
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError


def fake_host(tmp_path, flags="fpu vmx sse", modules=("kvm", "kvm_intel"), kvm=True):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text("processor\t: 0\nflags\t\t: %s\n" % flags)
    (tmp_path / "dev").mkdir()
    if kvm:
        (tmp_path / "dev" / "kvm").write_text("")
    for module in modules:
        (tmp_path / "sys" / "module" / module).mkdir(parents=True)
    return str(tmp_path)


def test_hardware_kvm_is_usable(tmp_path):
    usable, reason = probe.kvm_usability(fake_host(tmp_path))
    assert usable and "kvm_intel" in reason


def test_kvm_without_hardware_virtualisation_is_refused(tmp_path):
    """The machine this project is built on: /dev/kvm backed by kvm_pvm, no vmx flag."""
    usable, reason = probe.kvm_usability(fake_host(tmp_path, flags="fpu sse hypervisor", modules=("kvm", "kvm_pvm")))
    assert not usable and "vmx/svm" in reason


def test_flag_without_hardware_module_names_what_is_loaded(tmp_path):
    usable, reason = probe.kvm_usability(fake_host(tmp_path, modules=("kvm", "kvm_pvm")))
    assert not usable and "kvm_pvm" in reason


def test_missing_dev_kvm(tmp_path):
    usable, reason = probe.kvm_usability(fake_host(tmp_path, kvm=False))
    assert not usable and "/dev/kvm" in reason


def test_libvirt_without_kvm(tmp_path):
    usable, reason = probe.kvm_usability(fake_host(tmp_path), libvirt_offers_kvm=False)
    assert not usable and "libvirt" in reason


def test_resolve_qemu_is_always_qemu():
    assert probe.resolve_virt_type(None, "qemu") == "qemu"


def test_resolve_rejects_unknown_type():
    with pytest.raises(VirtfleetError, match="virt_type must be one of"):
        probe.resolve_virt_type(None, "xen")


def test_resolve_auto_and_kvm_follow_the_probe(monkeypatch):
    monkeypatch.setattr(probe, "kvm_usability", lambda **kw: (False, "no vmx"))
    assert probe.resolve_virt_type(None, "auto") == "qemu"
    with pytest.raises(VirtfleetError, match="KVM cannot run guests on this host: no vmx"):
        probe.resolve_virt_type(None, "kvm")
    monkeypatch.setattr(probe, "kvm_usability", lambda **kw: (True, "hardware"))
    assert probe.resolve_virt_type(None, "auto") == "kvm"


def test_this_host_answers_without_error():
    usable, reason = probe.kvm_usability()
    assert isinstance(usable, bool) and reason
