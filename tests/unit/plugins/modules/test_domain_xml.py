"""domain_xml: whatever the arguments, a result or a clean message (issue 10 item 11)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_XML_MODULE_SPEC
from tests.support.module_fuzz import NAMES, assert_clean, module_arguments, run_main


@pytest.fixture(autouse=True)
def host_answers(domain_capabilities):
    """libvirt's test driver has no domain capabilities: this host's answers stand in (conftest.py)."""
    return domain_capabilities


SIZES = st.sampled_from(["512M", "1G", "0", "-1", "20T", "1.5M", "512", 512, "536870912", "1P", "lots", 1 << 70])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arguments_end_in_a_result_or_a_clean_message(sandbox, data):
    spec = DOMAIN_XML_MODULE_SPEC.argument_spec
    special = {"name": NAMES, "memory": SIZES, "max_memory": SIZES,
               "uuid": st.sampled_from(["6695eb01-f6a4-8304-79aa-97f2502e193f", "00000000-0000-0000-0000-000000000000",
                                        "not-a-uuid", "6695EB01F6A4830479AA97F2502E193F", ""]),
               "mac": st.sampled_from(["52:54:00:00:00:01", "00:00:00:00:00:00", "01:00:00:00:00:00",
                                       "52:54:00:00:00:01\n", "zz"]),
               "extra_devices": st.lists(st.sampled_from(["<rng model='virtio'/>", "<a><b></a>", "", "text",
                                                          "<disk type='file'/>"]), max_size=2)}
    args = data.draw(module_arguments(spec, sandbox, special, key="name"), label="args")
    assert_clean(run_main("domain_xml", args, sandbox, check=data.draw(st.booleans(), label="check")))


def test_a_definition_is_written_and_a_rerun_is_unchanged(sandbox):
    args = {"uri": sandbox.uri, "instances_path": sandbox.instances, "name": "g2", "virt_type": "qemu",
            "path": sandbox.instances + "/g2/domain.xml"}
    first = run_main("domain_xml", args, sandbox, check=False)
    again = run_main("domain_xml", args, sandbox, check=False)
    assert not first.get("failed"), first
    assert first["changed"] is True and again["changed"] is False, (first, again)
