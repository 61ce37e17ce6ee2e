"""The image cache's cached re-run: the inspector's facts without the inspector, and what a re-run loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import record as image_record
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.format_consts import INSPECTOR_VERSION
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import RECORD_SUFFIX


# ---- the inspector's facts without the inspector -------------------------------------------------------

def test_the_cache_knows_the_inspector_version_without_loading_the_inspector():
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import format as image_format
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import format_consts as consts

    # A cached verdict is trusted while its record names this version: one value, shared.
    assert consts.INSPECTOR_VERSION == image_format.INSPECTOR_VERSION
    assert consts.QEMU_FORMAT_NAMES == image_format.QEMU_FORMAT_NAMES
    assert image_record.qemu_name("vhd") == "vpc" and image_record.qemu_name("iso") == "raw"


# ---- what a cached re-run loads ----------------------------------------------------------------------

_MODULE_UTILS = "ansible_collections.virtfleet.libvirt.plugins.module_utils."
# What a cached re-run must not import (under AnsiballZ each is compiled from source on every run).
HEAVY = (_MODULE_UTILS + "_image.format", _MODULE_UTILS + "_host.qemu_img", _MODULE_UTILS + "_image.fetch",
         _MODULE_UTILS + "_image.prune", "ansible.module_utils.urls", _MODULE_UTILS + "_host.guest", "libvirt")
# Runs the module file as Ansible does and writes the names of the modules it imported to the last argument.
_PROBE = """
import atexit, json, runpy, sys
sys.argv = sys.argv[1:]
out = sys.argv.pop()
atexit.register(lambda: json.dump(sorted(sys.modules), open(out, "w")))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_in_fresh_python(tmp_path, args, check=False):
    """(result, names of the imported modules) of one run of the image_cache module in a new interpreter."""
    from tests.support.runner import COLLECTIONS, module_path

    payload = dict(args, _ansible_check_mode=check, _ansible_diff=False,
                   _ansible_module_name="virtfleet.libvirt.image_cache", _ansible_tmpdir=str(tmp_path),
                   _ansible_remote_tmp=str(tmp_path))
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    modules_file = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, module_path("image_cache"), str(args_file),
                           str(modules_file)], capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS, LC_ALL="C.UTF-8"))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    out = proc.stdout
    return json.loads(out[out.index("{"):]), set(json.loads(modules_file.read_text()))


def test_a_cached_rerun_loads_neither_the_fetch_path_nor_the_inspector(tmp_path):
    source = tmp_path / "source.img"
    source.write_bytes(b"virtfleet" * 1000 + b"\0" * (1 << 20))
    args = {"url": "file://" + str(source), "format": "raw", "cache_format": "raw",
            "instances_path": str(tmp_path / "instances")}

    miss, loaded = _run_in_fresh_python(tmp_path, args)
    assert miss["changed"] and miss["fetched"] and miss["actions"] == ["fetch"]
    assert miss["format"] == "raw" and miss["size"] == os.path.getsize(source)
    with open(miss["path"], "rb") as cached, open(source, "rb") as original:
        assert cached.read() == original.read()
    assert {_MODULE_UTILS + "_image.fetch", _MODULE_UTILS + "_image.format"} <= loaded  # the probe sees imports

    for check in (False, True):
        hit, loaded = _run_in_fresh_python(tmp_path, args, check=check)
        assert not hit["changed"] and not hit["fetched"] and hit["actions"] == []
        assert {key: hit[key] for key in ("path", "format", "source_format", "virtual_size", "size")} == \
            {key: miss[key] for key in ("path", "format", "source_format", "virtual_size", "size")}
        assert loaded.isdisjoint(HEAVY), sorted(loaded.intersection(HEAVY))
        assert _MODULE_UTILS + "_image.cache" in loaded


def test_a_record_from_an_older_inspector_still_gets_the_inspector(tmp_path):
    source = tmp_path / "source.img"
    source.write_bytes(b"\0" * (1 << 20))
    args = {"url": str(source), "instances_path": str(tmp_path / "instances")}
    first, _loaded = _run_in_fresh_python(tmp_path, args)
    record_path = first["path"] + RECORD_SUFFIX
    with open(record_path) as handle:
        record = json.load(handle)
    record["inspector_version"] = INSPECTOR_VERSION - 1
    image_record.write_record(record_path, record)

    again, loaded = _run_in_fresh_python(tmp_path, args)
    assert again["changed"] and not again["fetched"] and again["actions"] == ["reinspect"]
    assert _MODULE_UTILS + "_image.format" in loaded
    assert image_record.read_record(record_path)["inspector_version"] == INSPECTOR_VERSION
    _result, loaded = _run_in_fresh_python(tmp_path, args)
    assert loaded.isdisjoint(HEAVY)


# ---- diff (issue 13) ---------------------------------------------------------------------------------

def test_diff_shows_the_cached_image_before_and_after(tmp_path):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.cache import image_cache_core

    source = tmp_path / "source.img"
    source.write_bytes(b"virtfleet" * 1024)  # whole sectors: qemu rounds a raw size up
    params = {"url": str(source), "instances_path": str(tmp_path / "instances"), "uri": "test:///default"}
    planned = image_cache_core(params, check_mode=True, diff=True)
    assert planned["diff"]["before"] == {"path": planned["path"], "state": "absent"}
    assert planned["diff"]["after"]["state"] == "present" and planned["diff"]["after"]["format"] == "raw"
    fetched = image_cache_core(params, diff=True)
    after = {"path": fetched["path"], "state": "present", "format": "raw", "source_format": "raw",
             "virtual_size": 9216, "size": 9216, "checksum": None, "inspector_version": INSPECTOR_VERSION}
    assert fetched["diff"] == {"before": {"path": fetched["path"], "state": "absent"}, "after": after}
    again = image_cache_core(params, diff=True)
    assert not again["changed"] and again["diff"] == {"before": after, "after": after}

    pruned = image_cache_core(dict(params, state="pruned", min_unused_age="0"), check_mode=True, diff=True)
    assert pruned["diff"] == {"before": {"bases": [fetched["path"]]}, "after": {"bases": []}}
    removed = image_cache_core(dict(params, state="absent"), diff=True)
    assert removed["diff"] == {"before": after, "after": {"path": fetched["path"], "state": "absent"}}
    gone = image_cache_core(dict(params, state="absent"), diff=True)
    assert not gone["changed"] and gone["diff"]["before"] == gone["diff"]["after"]
