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
