"""Property: whatever vm_resize is given, it answers with a result or a clear VirtfleetError, never a traceback.

Arguments are drawn from the module's options with values of every JSON type (Ansible would convert some;
the core is also called with plain dicts by a list form), in check mode and for real, against a faked
libvirt with real files (see conftest). Every run starts from a fresh guest.
"""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.core import ensure_resize
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.spec import ITEM_SPEC

from .conftest import SHUTOFF, GuestBox

ANY = st.one_of(st.none(), st.booleans(), st.integers(-5, 10 ** 13), st.floats(allow_nan=True),
                st.text(max_size=12), st.lists(st.integers(), max_size=2))
SIZES = st.one_of(st.sampled_from(["64M", "96M", "128M", "32M", "1G", "0", "-1M", "1.5M", "nanM", "20T", "9E"]),
                  st.integers(-1, 1 << 64), ANY)
MEMORY = st.one_of(st.sampled_from(["256M", "384M", "300M", "128M", "1G", "2048", "0M", "1P"]),
                   st.integers(-1, 10 ** 7),
                   ANY)
DISK_KEYS = st.sampled_from(["root", "blank", "ephemeral", "swap", "config_drive", "vda", "vdb", "hdz", "../x", ""])
VALID = {
    "vcpus": st.integers(1, 4), "max_vcpus": st.integers(1, 8),
    "memory": st.sampled_from(["256M", "384M", "512M", "300M", "128M"]), "max_memory": st.sampled_from(["1G", "256M"]),
    "disks": st.dictionaries(st.sampled_from(["root", "blank", "vda", "vdb"]), st.sampled_from(["64M", "96M", "32M"]),
                             max_size=2),
    "mode": st.sampled_from(["auto", "live", "cold"]), "state": st.sampled_from(["resized", "confirmed", "reverted"]),
    "confirm": st.booleans(), "headroom": st.booleans(), "allow_decrease": st.booleans(), "force_off": st.booleans(),
}
WILD = {"memory": MEMORY, "max_memory": MEMORY, "disks": st.one_of(st.dictionaries(DISK_KEYS, SIZES, max_size=3), ANY),
        "name": st.one_of(st.sampled_from(["nope", "../g1", "g1\n", "locks", ""]), ANY)}
OPTIONS = sorted(ITEM_SPEC.argument_spec)


@st.composite
def vm_resize_params(draw):
    """A plausible resize (so that runs reach the plan and the steps), with up to two options made wild."""
    params = {"name": "g1"}
    for key in draw(st.lists(st.sampled_from(sorted(VALID)), unique=True, max_size=5)):
        params[key] = draw(VALID[key])
    if params.get("state", "resized") != "resized":
        sizes = ("vcpus", "max_vcpus", "memory", "max_memory", "disks")
        params = {key: value for key, value in params.items() if key not in sizes}
    for key in draw(st.lists(st.sampled_from(OPTIONS), unique=True, max_size=2)):
        params[key] = draw(WILD.get(key, ANY))
    return params


PARAMS = vm_resize_params()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(PARAMS, st.booleans()), min_size=1, max_size=3), running=st.booleans())
def test_vm_resize_never_raises_anything_but_a_clear_error(calls, running):
    """A few calls in a row on one guest (a resize, then a confirm or revert, ...): each a result or a clear error."""
    with tempfile.TemporaryDirectory() as root:
        guest = GuestBox(root, state=1 if running else SHUTOFF)
        for params, check_mode in calls:
            params = dict(params, instances_path=guest.instances)
            params.setdefault("shutdown_timeout", 1)
            params.setdefault("start_timeout", 1)
            calls_before, defined_before = len(guest.dom.calls), len(guest.conn.defined)
            try:
                result = ensure_resize(params, check_mode=check_mode, hypervisor=guest.hypervisor)
            except VirtfleetError as exc:
                assert exc.msg and "internal error" not in exc.msg and "Traceback" not in exc.msg
                continue
            assert isinstance(result["changed"], bool) and result["how"] in ("none", "live", "cold", "offline")
            if check_mode:
                assert len(guest.dom.calls) == calls_before and len(guest.conn.defined) == defined_before
