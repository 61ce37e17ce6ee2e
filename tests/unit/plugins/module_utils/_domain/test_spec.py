"""The domain layer's argument specs, declared once: docs, choices and typed specs agree."""

from __future__ import annotations

import importlib

import pytest
import yaml

from ansible_collections.virtfleet.libvirt.plugins.doc_fragments import common as common_fragments
from ansible_collections.virtfleet.libvirt.plugins.doc_fragments import items as item_fragments
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import xml_spec


def _documented(module_name):
    module = importlib.import_module("ansible_collections.virtfleet.libvirt.plugins.modules." + module_name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = dict(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment") or []:
        plugin, _dot, part = fragment.rpartition(".")
        source = item_fragments if plugin.endswith(".items") else common_fragments
        options.update((yaml.safe_load(getattr(source.ModuleDocFragment, part.upper(), "")) or {}).get("options")
                       or {})
    return options


def _compare(documented, declared, where):
    assert sorted(documented) == sorted(declared), where
    for name, option in declared.items():
        doc = documented[name]
        assert doc.get("type", "str") == option.get("type", "str"), (where, name)
        assert doc.get("default") == option.get("default"), (where, name)
        assert doc.get("choices") == option.get("choices"), (where, name)
        assert doc.get("elements") == option.get("elements"), (where, name)
        if option.get("options"):
            _compare(doc.get("suboptions") or {}, option["options"], "%s.%s" % (where, name))


@pytest.mark.parametrize("module_name, module_spec", [
    ("domain_xml", spec.DOMAIN_XML_MODULE_SPEC), ("domain", spec.DOMAIN_MODULE_SPEC),
    ("domain_info", spec.DOMAIN_INFO_MODULE_SPEC)])
def test_each_modules_documentation_says_what_its_spec_declares(module_name, module_spec):
    _compare(_documented(module_name), module_spec.argument_spec, module_name)


def test_choices_are_the_constants_the_typed_specs_check_against():
    disk, nic = spec.DISK_OPTIONS.argument_spec, spec.NIC_OPTIONS.argument_spec
    assert disk["bus"]["choices"] == list(spec.DISK_BUSES) and nic["type"]["choices"] == list(spec.NIC_TYPES)
    assert spec.DOMAIN_XML_ITEM_SPEC.argument_spec["watchdog_action"]["choices"] == list(spec.WATCHDOG_ACTIONS)
    assert spec.DOMAIN_ITEM_SPEC.argument_spec["state"]["choices"] == list(spec.WANTED_STATES)
    with pytest.raises(VirtfleetError, match="disks\\[0\\].bus must be one of virtio, scsi, sata, ide, usb"):
        xml_spec.DomainXmlSpec.from_params({"name": "g1", "disks": [{"path": "/a", "bus": "floppy"}]})


def test_the_item_spec_is_the_options_of_a_list_form():
    option = spec.DOMAIN_XML_ITEM_SPEC.as_list_option()
    assert option["options"]["disks"]["options"] == spec.DISK_OPTIONS.argument_spec
    assert "uri" not in option["options"] and "instances_path" not in option["options"]


def test_max_memory_slots_is_an_option_for_hot_plug_headroom():
    with_headroom = xml_spec.DomainXmlSpec.from_params({"name": "g1", "memory": "1G", "max_memory": "4G"})
    assert (with_headroom.max_memory_kib, with_headroom.max_memory_slots) == (4 << 20, spec.DEFAULT_MEMORY_SLOTS)
    assert xml_spec.DomainXmlSpec.from_params({"name": "g1", "max_memory": "4G", "max_memory_slots": 4}) \
        .max_memory_slots == 4
    with pytest.raises(VirtfleetError, match="max_memory_slots applies with max_memory only"):
        xml_spec.DomainXmlSpec.from_params({"name": "g1", "max_memory_slots": 4})
    with pytest.raises(VirtfleetError, match="max_memory_slots must be between 1 and 255"):
        xml_spec.DomainXmlSpec.from_params({"name": "g1", "max_memory": "4G", "max_memory_slots": 256})


def test_a_nic_shorthand_does_not_meet_a_type_and_mode_belongs_to_direct_nics():
    with pytest.raises(VirtfleetError, match="give either type and source, or exactly one of network"):
        xml_spec.NicSpec.from_params({"network": "default", "type": "bridge"}, 0)
    with pytest.raises(VirtfleetError, match="mode applies to direct interfaces only"):
        xml_spec.NicSpec.from_params({"bridge": "br0", "mode": "vepa"}, 0)
    assert xml_spec.NicSpec.from_params({"direct": "eth0"}, 0).mode == spec.DEFAULT_DIRECT_MODE
    assert xml_spec.NicSpec.from_params({}, 0) == xml_spec.NicSpec("network", None, "default", None, "virtio", None)


def test_the_domain_spec_takes_the_defaults_of_its_argument_spec():
    built = spec.DomainSpec.from_params({"name": "g1"})
    assert (built.state, built.apply, built.shutdown_timeout, built.start_timeout, built.address_timeout) == (
        "running", "none", 120, 60, 300)
    assert built.desired_file == "/var/lib/virtfleet/instances/g1/domain.xml" and built.xml is None
    assert spec.DomainSpec.from_params({"name": "g1", "xml_file": "/x/../d.xml"}).desired_file == "/d.xml"
    with pytest.raises(VirtfleetError, match="xml and xml_file are mutually exclusive"):
        spec.DomainSpec.from_params({"name": "g1", "xml": "<domain/>", "xml_file": "/d.xml"})


def test_domain_info_needs_no_name_and_refuses_a_control_character():
    assert spec.DomainInfoSpec.from_params({}) == spec.DomainInfoSpec("qemu:///system", None, False)
    with pytest.raises(VirtfleetError, match="name must be a domain name"):
        spec.DomainInfoSpec.from_params({"name": "a\x00b"})


@pytest.mark.parametrize("module_name", ["domain_xml", "domain", "domain_info"])
def test_examples_and_return_are_yaml(module_name):
    module = importlib.import_module("ansible_collections.virtfleet.libvirt.plugins.modules." + module_name)
    assert isinstance(yaml.safe_load(module.EXAMPLES), list)
    assert isinstance(yaml.safe_load(module.RETURN), dict)
