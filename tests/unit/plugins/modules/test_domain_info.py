"""domain_info: whatever the arguments, a result or a clean message (issue 10 item 11)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_INFO_MODULE_SPEC
from tests.support.module_fuzz import NAMES, assert_clean, module_arguments, run_main


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arguments_end_in_a_result_or_a_clean_message(sandbox, data):
    spec = DOMAIN_INFO_MODULE_SPEC.argument_spec
    special = {"name": NAMES}
    args = data.draw(module_arguments(spec, sandbox, special), label="args")
    assert_clean(run_main("domain_info", args, sandbox, check=data.draw(st.booleans(), label="check")))


def test_the_sandbox_guest_is_reported(sandbox):
    result = run_main("domain_info", {"uri": sandbox.uri, "name": "g1"}, sandbox, check=True)
    assert_clean(result)
    assert [domain["name"] for domain in result["domains"]] == ["g1"], result
