"""The action table that carries out a DomainPlan: one handler per action, each one wrapper call."""

from __future__ import annotations

import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import actions
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import state
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.plan import DomainPlan
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DomainSpec
from tests.support.libvirt_errors import libvirt_error


class RecordingGuest:
    """Stands in for _host.guest.Guest: records which wrapper call each handler makes."""

    def __init__(self, calls, fail_on=None):
        self.calls, self.fail_on = calls, fail_on

    def __getattr__(self, name):
        def call(*args, **kwargs):
            if name == self.fail_on:
                raise libvirt_error("operation failed: %s refused" % name)
            self.calls.append((name, args, kwargs))
            return ["shutdown", "destroy"] if name == "shutdown" else None
        return call


class RecordingHypervisor:
    def __init__(self, fail_on=None):
        self.calls = []
        self.guest = RecordingGuest(self.calls, fail_on)

    def lookup(self, name):
        return self.guest

    def define(self, xml):
        self.calls.append(("define", (xml,), {}))
        return self.guest

    def disks_in_use(self, except_guest=None):
        return {}


SPEC = DomainSpec.from_params({"name": "g1", "xml": "<domain/>", "start_timeout": 7, "shutdown_timeout": 9,
                               "force_off": True})


def run(plan_actions, fail_on=None, **plan):
    hypervisor = RecordingHypervisor(fail_on)
    done = actions.apply_plan(hypervisor, SPEC, DomainPlan("g1", "running", "shutoff", actions=list(plan_actions),
                                                           desired_xml="<domain>new</domain>", **plan))
    return done, hypervisor.calls


def test_every_action_a_plan_can_hold_has_a_handler():
    transitions = {a for wanted in ("running", "paused", "shutdown", "defined")
                   for current in ("running", "paused", "shutoff") for a in state.transition_actions(wanted, current)}
    autostart = {a for want in (True, False) for a in state.autostart_actions(want, not want)}
    planned = {"define", "redefine", "destroy", "undefine", "remove_storage", "shutdown", "start", "start_paused"}
    assert set(actions.ACTIONS) == transitions | autostart | planned


@pytest.mark.parametrize("action, call", [
    ("define", ("define", ("<domain>new</domain>",), {})),
    ("redefine", ("define", ("<domain>new</domain>",), {})),
    ("start", ("start", (7,), {"paused": False})),
    ("start_paused", ("start", (7,), {"paused": True})),
    ("resume", ("resume", (7,), {})),
    ("suspend", ("suspend", (7,), {})),
    ("shutdown", ("shutdown", (9, True), {})),
    ("destroy", ("destroy", (), {})),
    ("undefine", ("undefine", (), {})),
    ("autostart_on", ("set_autostart", (True,), {})),
    ("autostart_off", ("set_autostart", (False,), {})),
])
def test_each_handler_makes_its_one_wrapper_call(action, call):
    done, calls = run([action])
    assert calls == [call]
    assert done.done == (["shutdown", "destroy"] if action == "shutdown" else [action])


def test_remove_storage_unlinks_the_planned_files_under_the_guests_lock_then_the_emptied_directory(tmp_path):
    spec = DomainSpec.from_params({"name": "g1", "state": "absent", "instances_path": str(tmp_path)})
    planned, other = tmp_path / "g1" / "disk", tmp_path / "g1" / "other"
    planned.parent.mkdir()
    planned.write_text("x")
    other.write_text("y")
    hypervisor = RecordingHypervisor()
    plan = DomainPlan("g1", "absent", "shutoff", actions=["undefine", "remove_storage"],
                      remove_files=[str(planned), str(tmp_path / "g1" / "gone")])
    done = actions.apply_plan(hypervisor, spec, plan)
    assert hypervisor.calls == [("undefine", (), {})] and done.done == ["undefine", "remove_storage"]
    assert done.removed_files == [str(planned)] and not planned.exists() and other.exists()
    assert os.path.exists(spec.layout.lock), "removed under the guest's lock"
    other.unlink()
    planned.write_text("x")
    assert actions.apply_plan(hypervisor, spec, plan).removed_files == [str(planned), str(planned.parent)]
    assert not planned.parent.exists()


def test_a_libvirt_failure_stops_the_run_and_says_what_was_done():
    with pytest.raises(VirtfleetError, match="libvirt failed to start domain g1: operation failed: start refused") \
            as failed:
        run(["define", "start", "autostart_on"], fail_on="start")
    assert failed.value.details == {"actions": ["define"]}
