"""The guest_disk module as Ansible runs it: what no_log hides, and what it must never corrupt."""

from __future__ import annotations

import json
import os

from tests.support.runner import run_module

MASK = "********"


def _drive_args(instances, **extra):
    args = {"guest": "web1", "kind": "config_drive", "instances_path": instances, "hostname": "web",
            "extra_files": {"virtfleet/dhcp": "1", "virtfleet/role": "web"}, "public_keys": ["1"],
            "vendor_data": {"enabled": "1", "role": "web"}, "metadata": {"id": "1"}}
    args.update(extra)
    return args


def test_short_values_of_non_secret_options_never_mask_paths_or_messages(tmp_path):
    instances = str(tmp_path / "instances")
    path = os.path.join(instances, "web1", "disk.config")
    runs = [run_module("guest_disk", _drive_args(instances), check=True, diff=True),
            run_module("guest_disk", _drive_args(instances), diff=True),
            run_module("guest_disk", _drive_args(instances), diff=True),
            run_module("guest_disk", _drive_args(instances, size="1M")),
            run_module("guest_disk", _drive_args(instances, extra_files={"../1": "1"})),
            run_module("guest_disk", {"guest": "web1", "kind": "config_drive", "instances_path": instances,
                                      "state": "absent"})]
    for result in runs:
        text = json.dumps(result)
        assert MASK not in text and "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" not in text, text
    created, again = runs[1], runs[2]
    assert created["changed"] and not again["changed"]
    assert created["path"] == again["path"] == path and created["xml_disk"]["path"] == path
    assert created["owned_files"] == [path, path + ".digest.json"]
    assert "size does not apply to a config_drive disk" in runs[3]["msg"]
    assert "invalid config drive path '../1'" in runs[4]["msg"]
    assert runs[5]["actions"] == ["remove"] and not os.path.exists(path)


def test_secrets_are_still_hidden(tmp_path):
    instances = str(tmp_path / "instances")
    secrets = ("Adm1n-pa55-not-for-logs", "s3cr3t-user-data", "injected-key-material")
    args = _drive_args(instances, admin_pass=secrets[0], user_data="#cloud-config\nruncmd: [echo %s]\n" % secrets[1],
                       files=[{"path": "/etc/key", "content": secrets[2]}])
    changed = dict(args, user_data="x" * 9)
    for result in (run_module("guest_disk", args, diff=True), run_module("guest_disk", changed, diff=True)):
        assert result["_rc"] == 0, result
        text = json.dumps(result)
        for secret in secrets:
            assert secret not in text


# ---- item 11: whatever the arguments, a result or a clean message (the core's property: _disk/test_core.py) ----

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from ansible_collections.virtfleet.libvirt.plugins.module_utils._disk.spec import MODULE_SPEC  # noqa: E402
from tests.support.module_fuzz import NAMES, assert_clean, each_item, module_arguments, run_main  # noqa: E402

SIZES = st.sampled_from(["1M", "8M", "0", "-1", "20T", "17T", "1.5M", "12 parsecs", "1000001", "8M\n", "8 MiB",
                         str(1 << 63), "1P"])


def _formats_a_big_filesystem(args):
    """An ephemeral or swap disk over 64 MiB (or of an unreadable size) would run mkfs for real: check mode then."""
    for item in each_item(args):
        size = str(item.get("size"))
        small = size.endswith("M") and size[:-1].isdigit() and int(size[:-1]) <= 64
        if item.get("kind", "root") in ("ephemeral", "swap") and not small:
            return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_module_arguments_end_in_a_result_or_a_clean_message(sandbox, data):
    spec = MODULE_SPEC.argument_spec
    special = {"guest": st.one_of(NAMES, st.sampled_from(["locks", "_base", "a\n", "../x", "é"])),
               "size": SIZES, "mode": st.sampled_from(["0600", "644", 644, 0o640, "0o640", 99999, "u=rw"]),
               "owner": st.sampled_from(["0", "99999999999", "root", "nobody-vf", "-1"]),
               "group": st.sampled_from(["0", "99999999999", "root", "-1"]),
               "base": st.just(sandbox.image), "instance_uuid": st.sampled_from(
                   ["6695eb01-f6a4-8304-79aa-97f2502e193f", "00000000-0000-0000-0000-000000000000", "x"])}
    args = data.draw(module_arguments(spec, sandbox, special, key="guest"), label="args")
    check = data.draw(st.booleans(), label="check") or _formats_a_big_filesystem(args)
    assert_clean(run_main("guest_disk", args, sandbox, check=check))
