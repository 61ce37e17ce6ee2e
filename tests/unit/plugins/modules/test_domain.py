"""domain: whatever the arguments, a result or a clean message (issue 10 item 11).

(_domain/test_lifecycle.py runs the same property through a new interpreter per example, a dozen times.)
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_MODULE_SPEC
from tests.support.module_fuzz import HOSTILE_TEXT, NAMES, assert_clean, each_item, module_arguments, run_main

GUEST = ("<domain type='test'><name>%s</name><uuid>%s</uuid><memory>%d</memory><vcpu>%d</vcpu>"
         "<os><type>hvm</type></os></domain>")
XML_TEXTS = st.one_of(HOSTILE_TEXT, *[st.sampled_from([
    GUEST % ("g1", "6695eb01-f6a4-8304-79aa-97f2502e193f", 8388608, 2),
    GUEST % ("g1", "6695eb01-f6a4-8304-79aa-97f2502e193f", 8388608, 3),
    GUEST % ("g1", "6695eb01-f6a4-8304-79aa-97f2502e193e", 8388608, 2),
    GUEST % ("other", "6695eb01-f6a4-8304-79aa-97f2502e1930", 1048576, 1),
    GUEST % ("g1", "not-a-uuid", 8388608, 2), "<domain/>", "<a><b></a>", "<domain type='test'>", ""])] * 3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arguments_end_in_a_result_or_a_clean_message(sandbox, data):
    spec = DOMAIN_MODULE_SPEC.argument_spec
    # waits are bounded to a second or so: sleeps are skipped, so a wait polls until its deadline
    timeouts = st.sampled_from([0, 1, -1, 86401, 1 << 64, "1", "x", True])
    special = {"name": NAMES, "xml": XML_TEXTS,
               "shutdown_timeout": timeouts, "start_timeout": timeouts, "address_timeout": timeouts}
    args = data.draw(module_arguments(spec, sandbox, special, key="name"), label="args")
    for item in each_item(args):
        for key in ("shutdown_timeout", "start_timeout", "address_timeout"):
            value = item.get(key)
            if value is None or not isinstance(value, (bool, int, str)):
                item.pop(key, None)  # None or 1e300 would mean the default: minutes of polling
            elif isinstance(value, int) and 1 < value <= 86400 or isinstance(value, str) and value.strip().isdigit():
                item[key] = 1  # a valid wait, bounded to a second (libvirt's test driver gives no address)
    assert_clean(run_main("domain", args, sandbox, check=data.draw(st.booleans(), label="check")))
