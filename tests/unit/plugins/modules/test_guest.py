"""guest: whatever the arguments, a result or a clean message (issue 10 item 11)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._guest.spec import MODULE_SPEC
from tests.support.module_fuzz import NAMES, assert_clean, module_arguments, run_main

SIZES = st.sampled_from(["1M", "8M", "0", "-1", "20T", "1.5M", "512", 512, "lots", "8M\n"])
WAITS = ("shutdown_timeout", "start_timeout", "address_timeout")


def _walk(value):
    """Every dict in ``value``, at any depth (the guest module nests the other modules' options)."""
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            yield from _walk(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk(inner)


def _bound(args):
    """Waits bounded to a second (sleeps are skipped, so a wait polls until its deadline); True when a disk would
    be formatted for real at a size above 64 MiB (then the example runs in check mode)."""
    big_filesystem = False
    for options in _walk(args):
        for key in WAITS:
            value = options.get(key)
            if key in options and (value is None or not isinstance(value, (bool, int, str))):
                options.pop(key)
            elif isinstance(value, int) and 1 < value <= 86400 or isinstance(value, str) and value.strip().isdigit():
                options[key] = 1
        size = str(options.get("size"))
        small = size.endswith("M") and size[:-1].isdigit() and int(size[:-1]) <= 64
        if options.get("kind") in ("ephemeral", "swap") and not small:
            big_filesystem = True
    return big_filesystem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arguments_end_in_a_result_or_a_clean_message(sandbox, domain_capabilities, data):
    spec = MODULE_SPEC.argument_spec
    timeouts = st.sampled_from([0, 1, -1, 86401, "1", "x", True])
    special = {"name": NAMES, "url": sandbox.urls(), "size": SIZES, "memory": SIZES,
               **{key: timeouts for key in WAITS}}
    args = data.draw(module_arguments(spec, sandbox, special, key="name"), label="args")
    check = data.draw(st.booleans(), label="check") or _bound(args)
    assert_clean(run_main("guest", args, sandbox, check=check))
