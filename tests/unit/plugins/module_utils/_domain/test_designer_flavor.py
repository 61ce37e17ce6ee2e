"""The designer's one policy for vCPUs, memory and hot-plug headroom, shared by domain_xml and vm_resize."""

from __future__ import annotations

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import designer
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.designer import FlavorLayout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_spec import DomainXmlSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import guest_layout

FACTS = designer.HostFacts(virt_type="qemu", machine="pc-i440fx-7.2", host_cpus=4, host_memory_kib=1 << 20)
LAYOUT = guest_layout("/srv/instances", "g1")
KIB_128M = 128 * 1024


def design(previous=None, facts=FACTS, **params):
    params.setdefault("name", "g1")
    params.setdefault("disks", [{"path": "/srv/instances/g1/disk", "format": "qcow2"}])
    return designer.design_domain(DomainXmlSpec.from_params(params), facts, LAYOUT, previous)


@pytest.mark.parametrize("value, given, existing, cap, headroom, expected", [
    (2, 5, None, 4, True, 5),        # a given maximum wins
    (2, None, None, 4, False, None),  # no headroom asked for
    (1, None, None, 4, True, 2),     # twice the flavor
    (3, None, None, 4, True, 4),     # capped by the host
    (4, None, None, 4, True, None),  # no room left: none
    (2, None, 3, 4, True, 3),        # an existing maximum that covers the flavor is kept
    (4, None, 3, 8, True, 8),        # one that does not: the default again
])
def test_headroom_maximum(value, given, existing, cap, headroom, expected):
    assert designer.headroom_maximum(value, given, existing, cap, headroom) == expected


def test_without_headroom_the_xml_is_as_before():
    dom = design(vcpus=2, memory="256M")
    assert (dom.vcpus, dom.vcpu_current, dom.max_memory_kib, dom.cpu) == (2, None, None, None)
    assert dom.memory_kib == dom.current_memory_kib == 256 * 1024


def test_headroom_defaults_to_twice_the_flavor_capped_by_the_host():
    dom = design(vcpus=1, memory="256M", headroom=True)
    assert (dom.vcpus, dom.vcpu_current) == (2, 1)
    assert (dom.max_memory_kib, dom.max_memory_slots) == (512 * 1024, 16)
    assert designer.numa_cell_memory_kib(dom) == 256 * 1024
    big = design(vcpus=3, memory="768M", headroom=True)
    assert (big.vcpus, big.max_memory_kib) == (4, 1 << 20)
    assert design(vcpus=4, memory="1G", headroom=True).max_memory_kib is None, "no room left on this host"


def test_headroom_given_explicitly_and_slots_without_max_memory():
    dom = design(vcpus=1, max_vcpus=8, memory="256M", headroom=True, max_memory_slots=4)
    assert (dom.vcpus, dom.max_memory_slots) == (8, 4)
    with pytest.raises(VirtfleetError, match="max_memory_slots applies with max_memory only, or with headroom"):
        DomainXmlSpec.from_params({"name": "g1", "max_memory_slots": 4})


def test_a_guest_grown_live_keeps_its_maxima_and_its_dimms():
    """What vm_resize leaves after a live resize is what domain_xml renders for the new flavor."""
    booted = design(vcpus=1, memory="256M", headroom=True)
    grown = booted.copy()
    designer.apply_flavor(grown, FlavorLayout(vcpus=2, max_vcpus=2, memory_kib=384 * 1024, max_memory_kib=512 * 1024,
                                              memory_slots=16, dimms_kib=(KIB_128M,)))
    again = design(previous=model.Domain.from_xml(grown.to_string()), vcpus=2, memory="384M", headroom=True)
    assert again.to_string() == grown.to_string()
    assert (again.vcpus, again.vcpu_current, again.max_memory_kib) == (2, None, 512 * 1024)
    assert [designer.dimm_size_kib(d) for d in again.devices if designer.is_dimm(d)] == [KIB_128M]
    assert designer.numa_cell_memory_kib(again) == 256 * 1024
    # Another flavor than the one grown to: all memory is boot memory again.
    other = design(previous=grown, vcpus=2, memory="512M", headroom=True)
    assert not [d for d in other.devices if designer.is_dimm(d)] and designer.numa_cell_memory_kib(other) == 512 * 1024


def test_apply_flavor_round_trips_a_designed_definition():
    dom = design(vcpus=1, memory="256M", headroom=True)
    again = model.Domain.from_xml(dom.to_string())
    designer.apply_flavor(again, FlavorLayout(vcpus=1, max_vcpus=2, memory_kib=256 * 1024, max_memory_kib=512 * 1024,
                                              memory_slots=16))
    assert again.to_string() == dom.to_string()


def test_apply_flavor_without_headroom_drops_the_numa_cell_it_added():
    dom = design(vcpus=1, memory="256M", headroom=True)
    designer.apply_flavor(dom, FlavorLayout(vcpus=2, max_vcpus=None, memory_kib=256 * 1024, max_memory_kib=None,
                                            memory_slots=None))
    assert dom.cpu is None and dom.max_memory_kib is None and (dom.vcpus, dom.vcpu_current) == (2, None)


def test_a_balloon_target_below_memory():
    dom = design(memory="512M")
    designer.apply_flavor(dom, FlavorLayout(vcpus=1, max_vcpus=None, memory_kib=512 * 1024, max_memory_kib=None,
                                            memory_slots=None, current_memory_kib=256 * 1024))
    assert (dom.memory_kib, dom.current_memory_kib) == (512 * 1024, 256 * 1024)


def test_dimm_device_is_what_libvirt_takes():
    text = model.etree.tostring(designer.dimm_device(KIB_128M).to_element(), encoding="unicode")
    assert text == ('<memory model="dimm"><target><size unit="KiB">131072</size><node>0</node></target></memory>')
    other_node = model.parse_device(model.parse_element(text.replace("<node>0", "<node>1")))
    assert designer.is_dimm(other_node) and designer.dimm_size_kib(other_node) is None
