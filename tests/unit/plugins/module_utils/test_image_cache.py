"""Pure logic of the image cache: names, records, URLs, checksums, SUMS files, decompression."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _image_cache as cache
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
    assert cache.public_url(url) == expected


def test_url_scheme_refuses_other_schemes_without_leaking_credentials():
    with pytest.raises(VirtfleetError) as err:
        cache.url_scheme("ftp://me:hunter2@example.com/a.img")
    assert "hunter2" not in err.value.msg and "ftp://example.com/a.img" in err.value.msg
    assert cache.url_scheme("HTTPS://example.com/a") == "https"
    assert cache.url_scheme("/srv/a.img") == "file"


def test_local_path_of_file_url_and_plain_path():
    assert cache.local_path_of("file:///srv/my%20image.img") == "/srv/my image.img"
    assert cache.local_path_of("/srv/a.img") == "/srv/a.img"
    with pytest.raises(VirtfleetError, match="remote host"):
        cache.local_path_of("file://otherhost/srv/a.img")


def test_file_name_of():
    assert cache.file_name_of("https://h/x/debian-12.qcow2?sig=1") == "debian-12.qcow2"
    assert cache.file_name_of("/srv/a%20b.img") == "a%20b.img"
    assert cache.file_name_of("http://h/x/a%20b.img") == "a b.img"


# ---- checksums --------------------------------------------------------------------------------------

def test_parse_checksum_digest_forms():
    assert cache.parse_checksum(None) is None
    assert cache.parse_checksum("") is None
    assert cache.parse_checksum("sha256:" + SHA256_OF_ABC.upper()) == ("sha256", SHA256_OF_ABC)
    assert cache.parse_checksum(" SHA512 : " + "a" * 128) == ("sha512", "a" * 128)


def test_parse_checksum_sums_reference_forms():
    assert cache.parse_checksum("sha256:https://h/SHA256SUMS") == ("sha256", "https://h/SHA256SUMS")
    assert cache.parse_checksum("sha512:/srv/SHA512SUMS") == ("sha512", "/srv/SHA512SUMS")


@pytest.mark.parametrize("value, fragment", [
    ("abc", "expected '<algorithm>:<hex digest>'"),
    ("md5:" + "a" * 32, "not supported"),
    ("sha256:" + "a" * 63, "64 hex digits"),
    ("sha256:" + "g" * 64, "64 hex digits"),
    ("sha512:" + "a" * 64, "128 hex digits"),
])
def test_parse_checksum_refuses_malformed(value, fragment):
    with pytest.raises(VirtfleetError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        cache.parse_checksum(value)


SUMS_GNU = """\
# comment
{d1}  debian-12-genericcloud-amd64.raw
{d2} *debian-12-genericcloud-amd64.qcow2
{d3}  ./sub/other.img
"""


def test_find_in_sums_gnu_format():
    d1, d2, d3 = ("1" * 64), ("2" * 64), ("3" * 64)
    text = SUMS_GNU.format(d1=d1, d2=d2, d3=d3)
    assert cache.find_in_sums(text, "debian-12-genericcloud-amd64.raw", "sha256") == d1
    assert cache.find_in_sums(text, "debian-12-genericcloud-amd64.qcow2", "sha256") == d2
    assert cache.find_in_sums(text, "other.img", "sha256") == d3
    assert cache.find_in_sums(text, "missing.img", "sha256") is None
    # a sha256 line is not taken for a sha512 request
    assert cache.find_in_sums(text, "other.img", "sha512") is None


def test_find_in_sums_bsd_format_matches_algorithm():
    text = "SHA256 (a.img) = %s\nSHA512 (a.img) = %s\n" % ("a" * 64, "b" * 128)
    assert cache.find_in_sums(text, "a.img", "sha256") == "a" * 64
    assert cache.find_in_sums(text, "a.img", "sha512") == "b" * 128


def test_resolve_checksum_reads_a_local_sums_file(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("%s  image.raw\n" % SHA256_OF_ABC)
    params = {"url": "http://h/x/image.raw", "checksum": "sha256:%s" % sums}
    assert cache.resolve_checksum(params) == ("sha256", SHA256_OF_ABC)
    params["url"] = "http://h/x/other.raw"
    with pytest.raises(VirtfleetError, match="no sha256 line for 'other.raw'"):
        cache.resolve_checksum(params)


# ---- names and records ------------------------------------------------------------------------------

def test_base_name_is_sha1_of_identity_without_credentials():
    plain = cache.base_name("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    with_creds = cache.base_name("http://u:p@h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    assert plain == with_creds
    assert len(plain) == 40 and int(plain, 16) >= 0
    identity = cache.image_identity("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw")
    assert plain == hashlib.sha1(identity.encode()).hexdigest()


def test_base_name_differs_by_checksum_and_cache_format():
    names = {
        cache.base_name("http://h/a.img", None, "raw"),
        cache.base_name("http://h/a.img", "sha256:" + SHA256_OF_ABC, "raw"),
        cache.base_name("http://h/a.img", None, "qcow2"),
        cache.base_name("http://h/b.img", None, "raw"),
    }
    assert len(names) == 4
    assert cache.base_name("/srv/a.img", None, "raw") == cache.base_name("file:///srv/a.img", None, "raw")


def test_cache_paths_layout():
    paths = cache.cache_paths("/i", "abc")
    assert paths == {"base_dir": "/i/_base", "path": "/i/_base/abc", "record": "/i/_base/abc.info.json",
                     "lock": "/i/locks/abc.lock"}


def test_cached_format_of():
    assert cache.cached_format_of("qcow2", "raw") == "raw"
    assert cache.cached_format_of("raw", "qcow2") == "qcow2"
    assert cache.cached_format_of("qcow2", "source") == "qcow2"
    assert cache.cached_format_of("vmdk", "source") == "vmdk"
    assert cache.cached_format_of("raw", "source") == "raw"


def _record(stat, **overrides):
    record = {"url": "http://h/a.img", "checksum": None, "format": "raw", "source_format": "raw",
              "virtual_size": 3, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inspector_version": 1}
    record.update(overrides)
    return record


def test_record_matches_only_the_same_file_and_request(tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"abc")
    stat = os.stat(image)
    assert cache.record_matches(_record(stat), stat, "http://u:p@h/a.img", None) is None
    assert cache.record_matches(_record(stat), None, "http://h/a.img", None) == "no cached file"
    assert cache.record_matches(None, stat, "http://h/a.img", None) == "no valid record"
    assert "another url" in cache.record_matches(_record(stat), stat, "http://h/b.img", None)
    assert "another checksum" in cache.record_matches(_record(stat), stat, "http://h/a.img", "sha256:" + "0" * 64)
    assert "changed" in cache.record_matches(_record(stat, size=4), stat, "http://h/a.img", None)
    assert "changed" in cache.record_matches(_record(stat, mtime_ns=1), stat, "http://h/a.img", None)
    broken = _record(stat)
    del broken["format"]
    assert "lacks 'format'" in cache.record_matches(broken, stat, "http://h/a.img", None)


def test_read_record_tolerates_garbage(tmp_path):
    path = tmp_path / "x.info.json"
    assert cache.read_record(str(path)) is None
    path.write_bytes(b"{not json")
    assert cache.read_record(str(path)) is None
    path.write_bytes(b"[1, 2]")
    assert cache.read_record(str(path)) is None
    cache.write_record(str(path), {"format": "raw"})
    assert cache.read_record(str(path)) == {"format": "raw"}


def test_remove_stale_temps_removes_only_this_images_temps(tmp_path):
    base = tmp_path / "abc"
    mine = [str(base) + ".virtfleet-tmp-1-aa", str(base) + ".info.json.virtfleet-tmp-2-bb"]
    other = [str(tmp_path / "abd.virtfleet-tmp-1-aa"), str(base), str(base) + ".info.json"]
    for path in mine + other:
        open(path, "wb").close()
    assert sorted(cache.remove_stale_temps(str(base))) == sorted(mine)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in other)


# ---- durations and retries --------------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [(0, 0), (90, 90), ("90", 90), ("30m", 1800), ("24h", 86400),
                                            ("2d", 172800), ("1w", 604800), ("1.5h", 5400)])
def test_parse_age(value, seconds):
    assert cache.parse_age(value) == seconds


@pytest.mark.parametrize("value", ["ten", "5y", "-1", True, -3])
def test_parse_age_refuses(value):
    with pytest.raises(VirtfleetError):
        cache.parse_age(value)


def test_retry_delays_backoff_is_capped():
    assert cache.retry_delays(0, 1) == []
    assert cache.retry_delays(4, 0.5) == [0.5, 1, 2, 4]
    assert cache.retry_delays(9, 1)[-1] == 60


# ---- compression ------------------------------------------------------------------------------------

PAYLOAD = os.urandom(1 << 16) + b"\0" * (3 << 20) + b"tail"


@pytest.mark.parametrize("kind, compress", [
    ("gzip", gzip.compress), ("xz", lzma.compress), ("bzip2", bz2.compress),
])
def test_detect_compression_by_magic(kind, compress):
    assert cache.detect_compression(compress(b"hello")) == kind


def test_detect_compression_ignores_lookalikes():
    assert cache.detect_compression(b"BZh9 not really bzip2") is None
    assert cache.detect_compression(b"QFI\xfb\0\0\0\3") is None
    assert cache.detect_compression(b"\0" * 512) is None
    assert cache.detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"


def _stream_through(tmp_path, data, algo="sha256", max_bytes=1 << 30, length="auto"):
    dest = str(tmp_path / "out")
    if os.path.exists(dest):
        os.unlink(dest)
    stream = io.BytesIO(data)
    result = cache.stream_to_file(stream, len(data) if length == "auto" else length, dest, algo, max_bytes,
                                  "http://h/a")
    with open(dest, "rb") as handle:
        return result, handle.read()


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress, bz2.compress, lambda d: d])
def test_stream_to_file_decompresses_and_hashes_the_compressed_bytes(tmp_path, compress):
    packed = compress(PAYLOAD)
    result, written = _stream_through(tmp_path, packed)
    assert written == PAYLOAD
    assert result["digest"] == hashlib.sha256(packed).hexdigest()
    assert result["received"] == len(packed) and result["written"] == len(PAYLOAD)


def test_stream_to_file_handles_multi_member_gzip(tmp_path):
    packed = gzip.compress(b"first part ") + gzip.compress(b"second part")
    _result, written = _stream_through(tmp_path, packed)
    assert written == b"first part second part"


def test_stream_to_file_handles_tiny_uncompressed_input(tmp_path):
    result, written = _stream_through(tmp_path, b"abc")
    assert written == b"abc" and result["digest"] == SHA256_OF_ABC


def test_stream_to_file_stops_a_decompression_bomb(tmp_path):
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(VirtfleetError, match="grows beyond"):
        _stream_through(tmp_path, bomb, max_bytes=8 << 20)


def test_stream_to_file_detects_a_short_body(tmp_path):
    with pytest.raises(cache._TransientError, match="after 3 of 10 bytes"):
        _stream_through(tmp_path, b"abc", length=10)


def test_stream_to_file_detects_a_truncated_compressed_stream(tmp_path):
    packed = lzma.compress(PAYLOAD)
    with pytest.raises(VirtfleetError, match="ended early"):
        _stream_through(tmp_path, packed[: len(packed) // 2], length=None)


# ---- describing transport failures -------------------------------------------------------------------

def _http_error(code, reason):
    import urllib.error

    return urllib.error.HTTPError("http://h/a", code, reason, {}, None)


@pytest.mark.parametrize("exc, fragment, transient", [
    (_http_error(404, "Not Found"), "HTTP 404 Not Found", False),
    (_http_error(401, "Unauthorized"), "url_username", False),
    (_http_error(503, "Service Unavailable"), "HTTP 503", True),
    (_http_error(429, "Too Many Requests"), "HTTP 429", True),
    (TimeoutError("timed out"), "timed out", True),
    (ConnectionRefusedError(111, "Connection refused"), "connection refused", True),
])
def test_describe_url_error(exc, fragment, transient):
    cause, is_transient = cache._describe_url_error(exc)
    assert fragment in cause and is_transient is transient


def test_describe_url_error_unwraps_urlerror_reasons():
    import http.client
    import ssl
    import urllib.error

    assert cache._describe_url_error(urllib.error.URLError(ConnectionRefusedError(111, "x"))) == \
        ("connection refused", True)
    assert cache._describe_url_error(urllib.error.URLError(TimeoutError())) == ("timed out", True)
    cause, transient = cache._describe_url_error(urllib.error.URLError(
        ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")))
    assert "validate_certs" in cause and not transient
    cause, transient = cache._describe_url_error(http.client.IncompleteRead(b"abc", 10))
    assert "closed the connection" in cause and transient


def test_with_retries_retries_transient_failures_then_names_the_attempts(monkeypatch):
    sleeps = []
    monkeypatch.setattr(cache.time, "sleep", sleeps.append)
    calls = []

    def always_refused():
        calls.append(1)
        raise cache._TransientError("connection refused")

    with pytest.raises(VirtfleetError, match=r"cannot fetch http://h/a: connection refused \(after 4 attempts\)"):
        cache._with_retries(always_refused, "http://u:p@h/a", {"retries": 3, "retry_delay": 0.5})
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]

    outcomes = [cache._TransientError("timed out"), "done"]

    def flaky():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert cache._with_retries(flaky, "http://h/a", {"retries": 1, "retry_delay": 0}) == "done"


def test_with_retries_explains_a_timeout():
    def slow():
        raise cache._TransientError("timed out")

    with pytest.raises(VirtfleetError, match=r"no data for 7 s; raise timeout"):
        cache._with_retries(slow, "http://h/a", {"retries": 0, "timeout": 7})


# ---- backing file names without qemu ------------------------------------------------------------------

def _fake_qcow2(path, backing=b""):
    header = bytearray(512)
    header[0:4] = b"QFI\xfb"
    header[4:8] = (3).to_bytes(4, "big")
    if backing:
        header[8:16] = (200).to_bytes(8, "big")
        header[16:20] = len(backing).to_bytes(4, "big")
        header[200:200 + len(backing)] = backing
    with open(path, "wb") as handle:
        handle.write(bytes(header))
    return str(path)


def test_qcow2_backing_name_reads_only_the_header(tmp_path):
    assert cache.qcow2_backing_name(_fake_qcow2(tmp_path / "a", b"/i/_base/abc")) == "/i/_base/abc"
    assert cache.qcow2_backing_name(_fake_qcow2(tmp_path / "b")) is None
    raw = tmp_path / "raw"
    raw.write_bytes(b"\0" * 1024)
    assert cache.qcow2_backing_name(str(raw)) is None
    assert cache.qcow2_backing_name(str(tmp_path / "missing")) is None


def test_unrecorded_disks_are_never_handed_to_qemu_img(tmp_path, monkeypatch):
    def no_qemu(*args, **kwargs):
        raise AssertionError("qemu-img must not run on an unrecorded disk")

    monkeypatch.setattr(cache.qemu_img, "info", no_qemu)
    disk = _fake_qcow2(tmp_path / "disk", b"../_base/abc")
    assert cache._backing_chain(disk, None) == [str(tmp_path / "../_base/abc")]
    assert cache._backing_chain(disk, "raw") == []
