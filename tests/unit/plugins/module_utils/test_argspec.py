import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, INSTANCES, ArgumentSpec


def test_specs_compose_with_their_constraints_and_refuse_conflicts():
    item = ArgumentSpec({"name": {"type": "str", "required": True}, "xml": {"type": "str"},
                         "xml_file": {"type": "path"}}, mutually_exclusive=[("xml", "xml_file")])
    merged = CONNECTION.merge(INSTANCES, item)
    assert set(merged.argument_spec) == {"uri", "instances_path", "name", "xml", "xml_file"}
    assert merged.constraints() == {"mutually_exclusive": [("xml", "xml_file")]}
    assert set(CONNECTION.argument_spec) == {"uri"}  # merging makes a new spec
    with pytest.raises(ValueError, match="defined twice"):
        ArgumentSpec({"a": {"type": "str"}}).merge(ArgumentSpec({"a": {"type": "int"}}))


def test_an_item_spec_becomes_the_options_of_a_list():
    item = ArgumentSpec({"name": {"type": "str", "required": True}, "size": {"type": "str", "default": "1G"}},
                        required_if=[("name", "x", ["size"])])
    option = item.as_list_option(required=True)
    assert option == {"type": "list", "elements": "dict", "required": True,
                      "options": item.argument_spec, "required_if": [("name", "x", ["size"])]}
    option["options"]["size"]["default"] = "2G"
    assert item.argument_spec["size"]["default"] == "1G"  # a copy
    assert item.defaults() == {"name": None, "size": "1G"}
