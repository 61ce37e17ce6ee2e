import re

import pytest

from ansible_collections.virtfleet.libvirt.plugins.filter import fleet as fleet_filters
from ansible_collections.virtfleet.libvirt.plugins.plugin_utils import _fleet

DEFAULTS = {"boot_state": "running", "boot_uri": "qemu:///system", "boot_instances_path": "/vf",
            "boot_guest_name": "NAME", "boot_guest_uuid": None, "boot_image_url": "", "boot_image_checksum": "",
            "boot_image_format": "", "boot_image_cache_format": "source", "boot_flavor": "",
            "boot_flavors": {"s": {"vcpus": 1, "memory": "128M", "disk": "64M"}}, "boot_root_format": "qcow2",
            "boot_root_backing": "overlay", "boot_config_drive": False, "boot_nics": [], "boot_fw_cfg": {}}


def guest(name, **extra):
    v = dict(DEFAULTS, boot_guest_name=name, virtfleet_hypervisor="hv1", boot_image_url="http://a:b@h/i.raw",
             boot_flavor="s")
    v.update(extra)
    return v


def test_a_role_variable_comes_from_the_guest_then_the_collection_wide_name_then_the_default():
    merged = _fleet.merged_vars("boot", {"virtfleet_state": "shutdown", "virtfleet_uri": "x", "boot_uri": "y",
                                         "other": 1}, DEFAULTS)
    assert merged["boot_state"] == "shutdown" and merged["boot_uri"] == "y" and merged["other"] == 1
    assert merged["boot_machine" if "boot_machine" in merged else "boot_root_format"] == "qcow2"


def test_boot_items_follow_the_flavor():
    flavors = {"s": {"vcpus": 2, "memory": "1G", "disk": "2G", "ephemeral": "1G", "swap": 0, "max_vcpus": 4}}
    planned = _fleet.boot_guest("g", guest("g", boot_flavors=flavors, boot_config_drive=True, boot_hostname=""))
    assert [d["kind"] for d in planned["disks"]] == ["root", "ephemeral", "config_drive"]
    assert planned["disks"][2]["hostname"] == "g"
    assert planned["xml"]["vcpus"] == 2 and planned["xml"]["max_vcpus"] == 4 and "max_memory" not in planned["xml"]
    assert planned["xml"]["metadata"]["image"] == "http://h/i.raw"  # no credentials in the domain's metadata
    assert "checksum" not in planned["image"] and planned["image"]["cache_format"] == "source"


@pytest.mark.parametrize("extra, message", [
    ({"boot_flavor": "nope"}, "Unknown flavor 'nope' for guest g. Known flavors: s."),
    ({"virtfleet_hypervisor": ""}, "guest g has no virtfleet_hypervisor"),
    ({"boot_image_url": ""}, "guest g has no image: set virtfleet_image_url"),
    ({"boot_flavors": {"s": {"vcpus": 1}}}, "flavor 's' must give vcpus, memory and disk"),
])
def test_a_guest_that_cannot_be_planned_says_why(extra, message):
    with pytest.raises(_fleet.PlanError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _fleet.boot_guest("g", guest("g", **extra))


def _plan(per_guest=False):
    vars_of = {"a": guest("a"), "b": guest("b"), "c": guest("c", virtfleet_hypervisor="hv2"),
               "bad": guest("bad", boot_flavor="x"), "d": guest("d", boot_instances_path="/other")}
    return _fleet.plan("boot", ["a", "b", "c", "bad", "d"], lambda g: vars_of[g], per_guest=per_guest)


def test_guests_are_batched_per_hypervisor_uri_and_instances_path_with_a_leader_each():
    plan = _plan()
    assert sorted(plan["leaders"]) == ["a", "c", "d"]
    assert list(plan["batches"][plan["batch_of"]["a"]]["guests"]) == ["a", "b"]
    assert plan["batch_of"]["a"] == plan["batch_of"]["b"] != plan["batch_of"]["d"]
    assert "bad" in plan["errors"] and "bad" not in plan["batch_of"]
    assert sorted(_plan(per_guest=True)["leaders"]) == ["a", "b", "c", "d"]


def test_each_guest_is_one_item_of_the_guest_module_without_what_the_module_fills_in():
    plan = _plan()
    batch = plan["batches"][plan["batch_of"]["a"]]
    items = _fleet.step_items(batch, "guest")
    assert [i["name"] for i in items] == ["a", "b"]
    assert items[0] == {"name": "a", "image": {"url": "http://a:b@h/i.raw", "cache_format": "source"},
                        "disks": [{"kind": "root", "size": "64M", "format": "qcow2", "backing": "overlay"}],
                        "xml": {k: v for k, v in batch["guests"]["a"]["xml"].items() if k != "name"},
                        "domain": {"state": "running"}}
    assert _fleet.step_items(batch, "domain") == [batch["guests"][g]["domain"] for g in ("a", "b")]
    with pytest.raises(ValueError, match="unknown step 'disks'"):
        _fleet.step_items(batch, "disks")


def test_each_guest_gets_its_own_outcome():
    plan = _plan()
    results = {"guest": {"results": [
        {"item": "a", "changed": True, "state": "running",
         "image": {"changed": True, "actions": ["fetch"]},
         "disks": [{"kind": "root", "changed": True, "actions": ["create"]}],
         "xml": {"changed": False, "console_log": "/vf/a/console.log"},
         "domain": {"changed": True, "state": "running", "actions": ["define", "start"],
                    "interfaces": [{"addresses": [{"address": "10.0.0.5"}]}]}},
        {"item": "b", "failed": True, "msg": "disk root: no space left", "failed_part": "disks"}]}}
    a = _fleet.guest_outcome(plan, "a", results)
    assert not a["failed"] and a["changed"] and a["domain"]["state"] == "running"
    assert a["summary"] == ("a: running, image fetch, root create, domain define+start, console /vf/a/console.log, "
                            "addresses 10.0.0.5")
    b = _fleet.guest_outcome(plan, "b", results)
    assert b["failed"] and b["msg"] == "disk root: no space left"
    c = _fleet.guest_outcome(plan, "c", {"guest": None})
    assert c["failed"] and "did not run on hypervisor hv2 for guest c" in c["msg"] and "unreachable" in c["msg"]
    d = _fleet.guest_outcome(plan, "d", {"guest": {"results": []}})
    assert d["failed"] and d["msg"] == "no image result for guest d"
    assert _fleet.guest_outcome(plan, "bad", results)["msg"].startswith("Unknown flavor 'x'")
    assert "was not planned" in _fleet.guest_outcome(plan, "zz", results)["msg"]


def test_arguments_the_modules_would_refuse_fail_the_guest_alone_with_ansibles_words():
    flavors = {"s": {"vcpus": "many", "memory": "128M", "disk": "64M"}}
    vars_of = {"ok": guest("ok"), "typo": guest("typo", boot_flavors=flavors),
               "choice": guest("choice", boot_image_cache_format="zip")}
    plan = _fleet.plan("boot", ["ok", "typo", "choice"], lambda g: vars_of[g])
    assert list(plan["batch_of"]) == ["ok"]
    # ansible-core 2.19 names the type "str", 2.17 (the oldest meta/runtime.yml allows) "<class 'str'>"
    assert re.match(r"guest typo: arguments: argument 'vcpus' is of type (str|<class 'str'>) found in 'xml'",
                    plan["errors"]["typo"]), plan["errors"]["typo"]
    assert "cache_format must be one of" in plan["errors"]["choice"]


RESIZE = {"resize_guest_name": "NAME", "resize_uri": "qemu:///system", "resize_instances_path": "/vf",
          "resize_flavor": "", "resize_flavors": {"s": {"vcpus": 1, "memory": "128M", "disk": "64M"},
                                                  "m": {"vcpus": 2, "memory": "256M", "disk": "128M", "swap": "8M"}},
          "resize_mode": "auto", "resize_allow_decrease": False, "resize_headroom": False,
          "resize_health_command": "", "resize_health_port": 0, "resize_health_host": "127.0.0.1",
          "resize_health_search": "", "resize_health_agent": False, "resize_health_timeout": 10}


def resize_vars(name, **extra):
    v = dict(RESIZE, resize_guest_name=name, virtfleet_hypervisor="hv1", resize_flavor="m")
    v.update(extra)
    return v


def test_resize_items_follow_the_flavor_the_inventory_names_and_checks_keep_them_unconfirmed():
    planned = _fleet.resize_guest("g", resize_vars("g"))
    assert planned["resize"] == {"name": "g", "flavor": "m", "vcpus": 2, "memory": "256M", "headroom": False,
                                 "disks": {"root": "128M", "swap": "8M"}, "mode": "auto", "allow_decrease": False,
                                 "confirm": True}
    assert planned["health"] == {}
    checked = _fleet.resize_guest("g", resize_vars("g", resize_health_command="true", resize_health_port="2222",
                                                   resize_health_search="SSH", resize_health_agent=True))
    assert checked["resize"]["confirm"] is False
    assert checked["health"] == {"command": "true", "agent": True, "timeout": 10,
                                 "port": {"host": "127.0.0.1", "port": 2222, "search_regex": "SSH"}}


@pytest.mark.parametrize("extra, message", [
    ({"resize_flavor": "xl"}, "Unknown flavor 'xl' for guest g. Known flavors: m, s."),
    ({"resize_health_port": 70000}, "resize_health_port must be a TCP port (1-65535), got 70000"),
    ({"resize_health_port": "ssh"}, "resize_health_port must be a TCP port (1-65535), got 'ssh'"),
    ({"resize_health_timeout": 0}, "resize_health_timeout must be a number of seconds from 1 to 3600, got 0"),
    ({"resize_health_command": {"a": 1}}, "resize_health_command must be a command line or a list of arguments"),
])
def test_a_resize_that_cannot_be_planned_says_why(extra, message):
    with pytest.raises(_fleet.PlanError, match=re.escape(message)):
        _fleet.resize_guest("g", resize_vars("g", **extra))


def _resize_batch():
    guests = {g: _fleet.resize_guest(g, resize_vars(g, resize_health_command="check", resize_health_agent=True))
              for g in ("a", "b", "c")}
    guests["d"] = _fleet.resize_guest("d", resize_vars("d"))
    return {"leader": "a", "hypervisor": "hv1", "uri": "qemu:///system", "instances_path": "/vf",
            "guests": guests}


APPLIED = {"results": [
    {"item": "a", "changed": True, "resize_state": "applied", "how": "live", "downtime_seconds": 0, "state": "running",
     "plan": [{"what": "vcpus", "before": 1, "after": 2, "how": "live"}]},
    {"item": "b", "changed": True, "resize_state": "applied", "how": "cold", "downtime_seconds": 11.5,
     "state": "running", "plan": [{"what": "memory", "before": 128 << 20, "after": 1 << 30, "how": "cold"}]},
    {"item": "c", "failed": True, "msg": "shrinking is refused"},
    {"item": "d", "changed": False, "resize_state": "confirmed", "how": "none", "plan": [], "state": "running"},
]}


def test_checks_run_only_for_unconfirmed_resizes_and_a_failed_check_reverts_its_guest_alone():
    batch = _resize_batch()
    assert _fleet.step_items(batch, "apply")[3] == batch["guests"]["d"]["resize"]
    commands = _fleet.step_items(batch, "health_command", APPLIED)
    assert [(i["guest"], i["command"], i["attempts"]) for i in commands] == [("a", "check", 5), ("b", "check", 5)]
    assert _fleet.step_items(batch, "health_port", APPLIED) == []
    checks = {"health_command": {"results": [{"item": commands[0], "rc": 0},
                                             {"item": commands[1], "rc": 3, "failed": True, "stderr": "db down"}]},
              "health_agent": {"results": [
                  {"item": {"guest": "a"}, "domains": [{"agent": {"responding": True, "error": None}}]},
                  {"item": {"guest": "b"}, "domains": [{"agent": {"responding": True, "error": None}}]}]},
              "health_port": {"skipped": True, "results": []}}
    assert _fleet.step_items(batch, "finish", APPLIED, checks) == [{"name": "a", "state": "confirmed"},
                                                                   {"name": "b", "state": "reverted"}]
    plan = {"role": "resize", "errors": {}, "batch_of": {g: "x" for g in "abcd"}, "batches": {"x": batch}}
    finish = {"results": [{"item": "a", "changed": True, "resize_state": "confirmed"},
                          {"item": "b", "changed": True, "resize_state": "reverted"}]}
    results = dict(checks, apply=APPLIED, finish=finish)
    a, b, c, d = (_fleet.guest_outcome(plan, g, results) for g in "abcd")
    assert a["summary"] == "a: running, resized live (vcpus 1 -> 2), downtime 0 s, health passed, confirmed"
    assert not a["failed"] and a["changed"]
    assert b["summary"] == ("b: running, resized cold (memory 128 MiB -> 1 GiB), downtime 11.5 s, health failed, "
                            "reverted")
    assert b["failed"] and b["msg"] == ("health check failed after the resize (health command failed (rc=3): db "
                                        "down): reverted to the previous size")
    assert c["failed"] and c["msg"] == "resize: shrinking is refused"
    assert d == {"changed": False, "failed": False, "hypervisor": "hv1", "steps": {"apply": [APPLIED["results"][3]]},
                 "resize": APPLIED["results"][3], "resize_state": "confirmed", "domain": {"state": "running"},
                 "summary": "d: running, unchanged"}


def test_the_report_gives_every_guest_its_outcome_and_the_report_group_to_those_that_changed_or_failed():
    plan = _plan()
    unchanged = {"item": "a", "changed": False, "image": {"changed": False}, "disks": [{"kind": "root"}],
                 "xml": {"changed": False, "console_log": "/vf/a/console.log"},
                 "domain": {"changed": False, "state": "running"}}
    grown = dict(unchanged, item="b", disks=[{"kind": "root", "changed": True, "actions": ["grow"]}],
                 xml={"changed": False})
    hostvars = {"a": {"boot_guest_result": {"results": [unchanged, grown]}},
                "c": {"boot_guest_result": {"unreachable": True, "msg": "ssh: no route to host"}},
                "d": {}}  # its leader never registered a result
    plan["run"] = "r1"
    lines = {line["guest"]: line for line in _fleet.report(plan, hostvars)}
    outcome = lines["a"].pop("outcome")
    assert outcome == dict(_fleet.guest_outcome(plan, "a", {"guest": hostvars["a"]["boot_guest_result"]}), run="r1")
    assert sorted(lines) == ["a", "b", "c", "d"]  # "bad" was never planned: the plan step reports it
    assert lines["a"] == {"guest": "a", "hypervisor": "hv1", "batch": plan["batch_of"]["a"], "failed": False,
                          "changed": False, "domain": {"changed": False, "state": "running", "item": "a"}, "groups": [],
                          "summary": "a: running, unchanged, console /vf/a/console.log"}
    assert lines["b"]["changed"] and lines["b"]["groups"] == ["virtfleet_boot_report"]
    assert lines["b"]["summary"] == "b: running, root grow"
    assert lines["c"]["failed"] and lines["c"]["domain"] is None and lines["c"]["groups"] == ["virtfleet_boot_report"]
    assert lines["c"]["summary"] == ("c: FAILED: the image step did not run on hypervisor hv2 for guest c: "
                                     "ssh: no route to host")
    assert lines["d"]["failed"] and "did not run on hypervisor hv1 for guest d (the hypervisor is unreachable" \
        in lines["d"]["summary"]
    # the filter the roles loop over hands out only the guests to report
    assert [line["guest"] for line in fleet_filters.fleet_report(plan, hostvars)] == ["b", "c", "d"]


def test_each_leader_summarises_its_batch_and_every_guest_gets_the_results_of_all():
    plan = _plan()
    one = {"item": "a", "changed": False, "image": {}, "disks": [{"kind": "root"}], "xml": {},
           "domain": {"changed": False, "state": "running"}}
    results = {"results": [one, dict(one, item="b", failed=True, msg="domain: start failed")]}
    assert _fleet.summary(plan, "a", [results]) == ["a: running, unchanged", "b: FAILED: domain: start failed"]
    by_guest = _fleet.results_by_guest(plan, {"a": {"boot_guest_result": results}, "c": {}, "d": {}})
    assert sorted(by_guest) == ["a", "b", "bad", "c", "d"]
    assert by_guest["a"] == {"hypervisor": "hv1", "changed": False, "failed": False,
                             "summary": "a: running, unchanged", "domain": dict(one["domain"], item="a")}
    assert by_guest["b"]["failed"] and by_guest["b"]["domain"] is None
    assert by_guest["bad"]["failed"] and by_guest["bad"]["summary"].startswith("bad: FAILED: Unknown flavor 'x'")


def test_a_guest_whose_hypervisor_is_unreachable_is_unreachable_itself():
    plan = _plan()
    c = _fleet.guest_outcome(plan, "c", {"guest": {"unreachable": True, "msg": "ssh: no route"}})
    assert c["failed"] and c["unreachable"]
    d = _fleet.guest_outcome(plan, "d", {"guest": {"failed": True, "msg": "boom"}})
    assert d["failed"] and "unreachable" not in d
    assert _fleet.leader_results(plan, "b", {"a": {"boot_guest_result": {"results": []}}}) == {
        "guest": {"results": []}}
    assert _fleet.leader_results(plan, "bad", {}) == {}


def test_a_guest_reports_the_outcome_handed_to_it_in_this_run_and_works_it_out_otherwise():
    plan = dict(_plan(), run="r2")
    hostvars = {"a": {"boot_guest_result": {"results": [{"item": "b", "failed": True, "msg": "disk: full"}]}}}
    handed = {"changed": True, "failed": False, "summary": "b: running, root grow", "run": "r2"}
    assert _fleet.own_outcome(plan, "b", handed, hostvars) == {"changed": True, "failed": False,
                                                               "summary": "b: running, root grow"}
    for stale in (dict(handed, run="r1"), None, "text"):  # an earlier run's, or none: from the leader's results
        assert _fleet.own_outcome(plan, "b", stale, hostvars)["msg"] == "disk: full"


def test_an_unreachable_hypervisor_fails_each_resize_guest_with_where_to_look():
    batch = _resize_batch()
    plan = {"role": "resize", "errors": {}, "batch_of": {"b": "x"}, "batches": {"x": batch}}
    outcome = _fleet.guest_outcome(plan, "b", {"apply": {"unreachable": True, "msg": "ssh: no route"}})
    assert outcome["failed"] and outcome["msg"] == ("the resize did not run on hypervisor hv1 for guest b: "
                                                    "ssh: no route")


def test_resize_planning_checks_each_item_against_vm_resize_and_batches_per_hypervisor():
    vars_of = {"a": resize_vars("a"), "b": resize_vars("b", resize_mode="sometimes"),
               "c": resize_vars("c", virtfleet_hypervisor="hv2")}
    plan = _fleet.plan("resize", ["a", "b", "c"], lambda g: vars_of[g])
    assert sorted(plan["leaders"]) == ["a", "c"]
    assert plan["errors"]["b"].startswith("guest b: resize: value of mode must be one of: auto, live, cold")
