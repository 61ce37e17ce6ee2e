"""A guest boots from what image_cache cached, whether the cache holds raw or qcow2 (issue 3)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.conftest import wait_for_report
from tests.support.runner import run_module

MIB = 1 << 20


@pytest.fixture(scope="module")
def published(guest_image, image_server):
    """The test guest served over HTTP both as raw and as qcow2."""
    qcow2 = os.path.join(os.path.dirname(guest_image["path"]), "virtfleet-test-guest.qcow2")
    if not os.path.exists(qcow2):
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", guest_image["path"], qcow2 + ".tmp"],
                       check=True)
        os.rename(qcow2 + ".tmp", qcow2)
    return {"raw": image_server.publish(guest_image["path"], "guest.raw"),
            "qcow2": image_server.publish(qcow2, "guest.qcow2")}


@pytest.mark.parametrize("source,cache_format", [("raw", "raw"), ("qcow2", "qcow2"), ("qcow2", "raw"),
                                                 ("raw", "qcow2")])
def test_guest_boots_from_the_cached_base(sandbox, published, source, cache_format):
    cached = run_module("image_cache", {"url": published[source], "format": source, "cache_format": cache_format,
                                        "instances_path": sandbox.instances})
    assert cached["_rc"] == 0 and cached["format"] == cache_format, cached

    name = sandbox.guest_name(source[:2] + cache_format[:2])
    disk = run_module("guest_disk", {"guest": name, "kind": "root", "base": cached["path"],
                                     "base_format": cached["format"], "size": "80M",
                                     "instances_path": sandbox.instances})
    assert disk["_rc"] == 0, disk
    backing = subprocess.run(["qemu-img", "info", "-U", "-f", "qcow2", "--output=json", disk["path"]],
                             capture_output=True, text=True, check=True).stdout
    assert '"backing-filename-format": "%s"' % cache_format in backing

    xml = run_module("domain_xml", {"name": name, "vcpus": 1, "memory": "128M", "virt_type": "qemu",
                                    "instances_path": sandbox.instances, "fw_cfg": {"opt/org.virtfleet/mode": "once"},
                                    "disks": [dict(disk["xml_disk"], boot_order=1)]})
    assert xml["_rc"] == 0, xml
    started = run_module("domain", {"name": name, "state": "running", "xml_file": xml["path"]})
    assert started["_rc"] == 0, started

    report = wait_for_report(os.path.join(sandbox.instances, name, "console.log"))
    assert report.disks["vda"]["size"] == 80 * MIB
    assert report.filesystems["vda"]["label"] == "VFGUEST"
