import threading
import time

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, ArgumentSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._batch import (
    ITEMS, batch_result, item_params, list_form_spec, run_items,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY, VirtfleetError

ITEM = ArgumentSpec({"name": {"type": "str", "required": True},
                     "state": {"type": "str", "default": "running", "choices": ["running", "absent"]},
                     "xml": {"type": "str"}, "xml_file": {"type": "path"}},
                    mutually_exclusive=[("xml", "xml_file")])


def test_the_list_form_spec_reuses_the_item_spec():
    spec = list_form_spec(CONNECTION, ITEM, "name")
    top, items = spec.argument_spec, spec.argument_spec[ITEMS]
    assert "required" not in top["name"] and top["state"]["default"] == "running"
    assert items["options"]["name"]["required"] is True
    assert "default" not in items["options"]["state"]  # the element takes the top-level value
    assert items["options"]["state"]["choices"] == ["running", "absent"]
    assert items["mutually_exclusive"] == [("xml", "xml_file")]
    assert (("name", ITEMS) in spec.mutually_exclusive) and (("name", ITEMS) in spec.required_one_of)
    assert ITEM.argument_spec["name"]["required"] is True  # untouched


def test_an_element_takes_the_top_level_value_of_what_it_leaves_out():
    params = {"uri": "test:///default", "state": "absent", "name": None, "xml": None, "xml_file": None,
              ITEMS: [], "batch_concurrency": 4}
    assert item_params(params, ITEM, {"name": "a", "state": None, "xml": "<x/>", "xml_file": None}) == {
        "uri": "test:///default", "state": "absent", "name": "a", "xml": "<x/>", "xml_file": None}


def test_items_run_concurrently_except_those_that_share_a_serial_key():
    running, peak, order = [0], [0], []
    lock = threading.Lock()

    def core(p):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
            order.append(p["name"])
        return {"changed": p["name"] != "b"}

    params = {"name": None, "state": "running", "xml": None, "xml_file": None, "batch_concurrency": 3,
              ITEMS: [{"name": n} for n in ("a", "b", "c", "d")]}
    out = run_items(params, ITEM, "name", core, serial=lambda p: "same" if p["name"] in ("a", "b") else p["name"])
    assert [r["item"] for r in out["results"]] == ["a", "b", "c", "d"]  # in the order given
    assert out["changed"] and not out.get("failed")
    assert [r["changed"] for r in out["results"]] == [True, False, True, True]
    assert peak[0] == 3 and order.index("a") < order.index("b")


def test_one_failure_does_not_stop_the_others_and_the_message_names_it():
    def core(p):
        if p["name"] == "bad":
            raise VirtfleetError("invalid guest name 'bad': no", path="/x")
        if p["name"] == "boom":
            raise KeyError("k")
        return {"changed": False, WARNINGS_KEY: ["careful"]}

    params = {"name": None, "state": "running", "xml": None, "xml_file": None, "batch_concurrency": 2,
              ITEMS: [{"name": "ok"}, {"name": "bad"}, {"name": "boom"}]}
    out = run_items(params, ITEM, "name", core)
    assert out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith("2 of 3 items failed: bad: invalid guest name 'bad': no; boom: internal error: "
                                 "KeyError")
    assert out["results"][1]["path"] == "/x" and "Traceback" in out["results"][2]["exception"]
    assert out[WARNINGS_KEY] == ["ok: careful"]


@pytest.mark.parametrize("value", [0, -1, 65, True, "4"])
def test_concurrency_is_bounded(value):
    with pytest.raises(VirtfleetError, match="batch_concurrency must be a number from 1 to 64"):
        run_items({"batch_concurrency": value, ITEMS: []}, ITEM, "name", lambda p: {})


def test_diffs_of_changed_items_are_labelled_with_the_item():
    results = [{"item": "a", "changed": True, "diff": {"before": "1", "after": "2", "before_header": "a.xml"}},
               {"item": "b", "changed": False, "diff": {"before": "1", "after": "1"}}]
    out = batch_result([dict(r) for r in results], diff=True)
    assert out["diff"] == [{"before": "1", "after": "2", "before_header": "a: a.xml", "after_header": "a: "}]
    out = batch_result([dict(r) for r in results], diff=False)
    assert "diff" not in out and all("diff" not in r for r in out["results"])
