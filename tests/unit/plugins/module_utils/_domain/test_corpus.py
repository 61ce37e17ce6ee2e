"""The domain model against a corpus of real libvirt domain definitions (see corpus/README.md).

For every definition: parse -> render keeps everything it said (canonically compared, the order of
children of one tag kept), rendering is a fixed point, and normalising what was rendered gives what
normalising the original gives (issue 10 item 20).
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import model
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain import normalize

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
FILES = sorted(name for name in os.listdir(CORPUS) if name.endswith(".xml"))


def _read(name):
    with open(os.path.join(CORPUS, name), encoding="utf-8") as handle:
        return handle.read()


def _lost(original, rendered, path="domain"):
    """Where ``rendered`` says less or other than ``original`` (for the failure message)."""
    if model.canonical(original) == model.canonical(rendered):
        return []
    if original.tag != rendered.tag or dict(original.attrib) != dict(rendered.attrib) or \
            (original.text or "").strip() != (rendered.text or "").strip():
        return ["%s: %s != %s" % (path, model.etree.tostring(original)[:300], model.etree.tostring(rendered)[:300])]
    mine = [c for c in original if isinstance(c.tag, str)]
    theirs = [c for c in rendered if isinstance(c.tag, str)]
    found = []
    for tag in sorted({c.tag for c in mine} | {c.tag for c in theirs}, key=str):
        left, right = [c for c in mine if c.tag == tag], [c for c in theirs if c.tag == tag]
        if len(left) != len(right):
            found.append("%s/%s: %d in the original, %d rendered" % (path, tag, len(left), len(right)))
            continue
        for one, two in zip(left, right):
            found += _lost(one, two, "%s/%s" % (path, tag))
    return found


def test_the_corpus_is_large_and_varied():
    assert len(FILES) >= 60
    tags = set()
    for name in FILES:
        root = model.parse_element(_read(name))
        tags.update(str(child.tag) for child in root)
        tags.update(str(dev.tag) for devices in root.findall("devices") for dev in devices)
    assert {"cpu", "os", "features", "clock", "sysinfo", "metadata", "memoryBacking", "numatune", "cputune",
            "seclabel", "disk", "interface", "hostdev", "memory", "filesystem", "tpm"} <= tags


@pytest.mark.parametrize("name", FILES)
def test_parse_then_render_keeps_everything(name):
    original = model.parse_element(_read(name))
    rendered = model.Domain.from_element(original).to_string()
    assert _lost(original, model.parse_element(rendered)) == []
    assert model.Domain.from_xml(rendered).to_string() == rendered, "rendering is a fixed point"


@pytest.mark.parametrize("name", FILES)
def test_normalising_what_was_rendered_is_normalising_the_original(name):
    original = model.Domain.from_xml(_read(name))
    again = model.Domain.from_xml(original.to_string())
    for runtime in (False, True):
        want = normalize.normalize_for_compare(original, runtime=runtime).to_string()
        assert normalize.normalize_for_compare(again, runtime=runtime).to_string() == want
        assert normalize.normalize_for_compare(model.Domain.from_xml(want), runtime=runtime).to_string() == want, \
            "normalising is idempotent"
