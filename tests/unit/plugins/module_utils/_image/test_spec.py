"""image_cache's options: the spec the module uses, and what a url, a checksum and a duration mean."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

SHA256_OF_ABC = hashlib.sha256(b"abc").hexdigest()


# ---- URLs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("http://user:secret@example.com/a.img", "http://example.com/a.img"),
    ("https://user@example.com:8443/x/a.img?x=1", "https://example.com:8443/x/a.img?x=1"),
    ("https://tok%40en:p%3Ass@host/a.img", "https://host/a.img"),
    ("http://example.com/a.img", "http://example.com/a.img"),
    ("file:///srv/a.img", "file:///srv/a.img"),
    ("/srv/images/../a.img", "file:///srv/a.img"),
])
def test_public_url_strips_credentials(url, expected):
    assert spec.public_url(url) == expected


def test_url_scheme_refuses_other_schemes_without_leaking_credentials():
    with pytest.raises(VirtfleetError, match="ftp://example.com/a.img") as err:
        spec.url_scheme("ftp://me:hunter2@example.com/a.img")
    assert "hunter2" not in err.value.msg and "ftp://example.com/a.img" in err.value.msg
    assert spec.url_scheme("HTTPS://example.com/a") == "https"
    assert spec.url_scheme("/srv/a.img") == "file"


def test_local_path_of_file_url_and_plain_path():
    assert spec.local_path_of("file:///srv/my%20image.img") == "/srv/my image.img"
    assert spec.local_path_of("/srv/a.img") == "/srv/a.img"
    with pytest.raises(VirtfleetError, match="remote host"):
        spec.local_path_of("file://otherhost/srv/a.img")


def test_file_name_of():
    assert spec.file_name_of("https://h/x/debian-12.qcow2?sig=1") == "debian-12.qcow2"
    assert spec.file_name_of("/srv/a%20b.img") == "a%20b.img"
    assert spec.file_name_of("http://h/x/a%20b.img") == "a b.img"


# ---- checksums --------------------------------------------------------------------------------------

def test_parse_checksum_digest_forms():
    assert spec.parse_checksum(None) is None
    assert spec.parse_checksum("") is None
    assert spec.parse_checksum("sha256:" + SHA256_OF_ABC.upper()) == ("sha256", SHA256_OF_ABC)
    assert spec.parse_checksum(" SHA512 : " + "a" * 128) == ("sha512", "a" * 128)


def test_parse_checksum_sums_reference_forms():
    assert spec.parse_checksum("sha256:https://h/SHA256SUMS") == ("sha256", "https://h/SHA256SUMS")
    assert spec.parse_checksum("sha512:/srv/SHA512SUMS") == ("sha512", "/srv/SHA512SUMS")


@pytest.mark.parametrize("value, fragment", [
    ("abc", "expected '<algorithm>:<hex digest>'"),
    ("md5:" + "a" * 32, "not supported"),
    ("sha256:" + "a" * 63, "64 hex digits"),
    ("sha256:" + "g" * 64, "64 hex digits"),
    ("sha512:" + "a" * 64, "128 hex digits"),
])
def test_parse_checksum_refuses_malformed(value, fragment):
    with pytest.raises(VirtfleetError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        spec.parse_checksum(value)


def test_is_hex():
    assert spec.is_hex("0123456789abcdefABCDEF")
    for value in ("", "0x1f", "1_0", "a b", "g", "\u0661"):
        assert not spec.is_hex(value), value


# ---- durations --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [(0, 0), (90, 90), ("90", 90), ("30m", 1800), ("24h", 86400),
                                            ("2d", 172800), ("1w", 604800), ("1.5h", 5400)])
def test_parse_age(value, seconds):
    assert spec.parse_age(value) == seconds


@pytest.mark.parametrize("value, message", [
    ("ten", r"^min_unused_age: cannot parse 'ten'; use seconds or a number with s, m, h, d or w$"),
    ("5y", r"^min_unused_age: cannot parse '5y'; use seconds or a number with s, m, h, d or w$"),
    ("-1", r"^min_unused_age: cannot parse '-1'; use seconds or a number with s, m, h, d or w$"),
    (True, r"^min_unused_age: expected a duration such as 24h, got True$"),
    (-3, r"^min_unused_age cannot be negative \(-3\)$"),
])
def test_parse_age_refuses(value, message):
    with pytest.raises(VirtfleetError, match=message):
        spec.parse_age(value)


# ---- the spec and the typed request --------------------------------------------------------------------

def test_the_module_spec_takes_its_choices_and_defaults_from_the_constants():
    options = spec.MODULE_SPEC.argument_spec
    assert options["state"]["choices"] == list(spec.STATES) and options["state"]["default"] == "present"
    assert options["cache_format"]["choices"] == list(spec.CACHE_FORMATS)
    assert options["format"]["choices"] == list(spec.DECLARED_FORMATS)
    assert options["verify"]["choices"] == list(spec.VERIFY_MODES)
    assert {"uri", "instances_path"} <= set(options)
    assert options["url_password"]["no_log"] and options["headers"]["no_log"]
    # the single form's requirements hold per element of items (and the core checks them at the top level)
    per_element = spec.MODULE_SPEC.argument_spec["items"]["required_if"]
    assert per_element == [("state", "present", ["url"]), ("state", "absent", ["url"])]
    assert "required_if" not in spec.MODULE_SPEC.constraints()
    item = spec.ITEM_SPEC.as_list_option()
    assert "instances_path" not in item["options"] and "url" in item["options"]


def test_from_params_with_the_module_defaults():
    params = dict(spec.MODULE_SPEC.defaults(), url="http://u:p@h/a.img", checksum="sha256:" + SHA256_OF_ABC)
    request = spec.ImageSpec.from_params(params)
    assert request.state == "present" and request.url == "http://u:p@h/a.img"
    assert request.checksum == ("sha256", SHA256_OF_ABC) and request.checksum.text == "sha256:" + SHA256_OF_ABC
    assert request.max_virtual_size == 1 << 40 and request.min_unused_age == 86400
    assert request.layout.base_dir == "/var/lib/virtfleet/instances/_base"
    assert (request.transport.timeout, request.transport.retries, request.transport.retry_delay) == (60, 3, 1.0)
    assert request.uri == "qemu:///system" and request.verify == "quick" and request.cache_format == "raw"


@pytest.mark.parametrize("params, fragment", [
    ({"state": "present"}, "url is required with state=present"),
    ({"state": "absent", "url": ""}, "url is required with state=absent"),
    ({"url": "file://rel/a.img"}, "remote host"),
    ({"url": "ftp://h/a.img"}, "unsupported image url"),
    ({"url": "/a.img", "cache_format": "vmdk"}, "cache_format must be raw, qcow2 or source"),
    ({"url": "/a.img", "verify": "paranoid"}, "verify must be quick or full"),
    ({"url": "/a.img", "max_virtual_size": "10X"}, "unknown unit"),
    ({"url": "/a.img", "checksum": "md5:" + "0" * 32}, "not supported"),
    ({"url": "/a.img", "state": "gone"}, "state must be present, absent or pruned"),
])
def test_from_params_refuses(params, fragment):
    with pytest.raises(VirtfleetError, match=fragment):
        spec.ImageSpec.from_params(params)


def test_pruned_needs_no_url():
    assert spec.ImageSpec.from_params({"state": "pruned", "min_unused_age": "1h"}).min_unused_age == 3600


class _Module:
    def __init__(self, params):
        self.params = params
        self.no_log_values = set()


def test_passwords_written_into_urls_become_no_log_values():
    module = _Module({"url": "https://fleet:p%40ss@h/a.img", "checksum": "sha256:https://u:sums-pw@h/SUMS"})
    spec.hide_url_passwords(module)
    assert module.no_log_values == {"p%40ss", "p@ss", "sums-pw"}
    module = _Module({"url": "/srv/a.img", "checksum": None})
    spec.hide_url_passwords(module)
    assert module.no_log_values == set()


@pytest.mark.parametrize("name, value", [
    ("retry_delay", -5.0), ("retry_delay", float("nan")), ("retry_delay", float("inf")), ("retry_delay", 1e9),
    ("timeout", 0), ("timeout", -1), ("timeout", 10 ** 30), ("retries", -1), ("retries", 10 ** 9),
    ("lock_timeout", -1), ("lock_timeout", 10 ** 400), ("retries", True),
])
def test_numeric_options_are_range_checked_up_front(name, value):
    """Issue 10 item 11: retry_delay -5 ended as a ValueError from time.sleep ('internal error')."""
    with pytest.raises(VirtfleetError, match=r"^%s must be a number.* from \d+ to \d+, got " % name):
        spec.ImageSpec.from_params({"url": "/a.img", name: value})


def test_the_ends_of_the_ranges_are_accepted():
    request = spec.ImageSpec.from_params({"url": "/a.img", "retry_delay": 0, "retries": 100, "timeout": 1,
                                          "lock_timeout": 0})
    assert (request.transport.retries, request.transport.timeout) == (100, 1)
    assert (request.transport.retry_delay, request.lock_timeout) == (0, 0)  # zero means zero, not the default


@pytest.mark.parametrize("url", ["http://[::1/x.img", "https://user:pw@[fe80::1/x.img", "file://[::1/x.img"])
def test_a_url_urlsplit_cannot_parse_is_refused_without_repeating_it(url):
    """Issue 10 item 11: an unclosed IPv6 bracket made urlsplit raise ValueError ('internal error')."""
    for parse in (spec.url_scheme, spec.public_url, spec.local_path_of, spec.file_name_of):
        with pytest.raises(VirtfleetError, match=r"^an image or SUMS url cannot be parsed \(.*IPv6.*\): use "
                                                 r"http://, https://, file:// or an absolute path on the hypervisor$"):
            parse(url)
