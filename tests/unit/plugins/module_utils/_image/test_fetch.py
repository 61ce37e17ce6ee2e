"""Fetching into the image cache: SUMS files, retries, decompression, streaming, transport failures."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import fetch
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import ImageSpec, Transport

SHA256_OF_ABC = hashlib.sha256(b"abc").hexdigest()


# ---- SUMS files -------------------------------------------------------------------------------------

SUMS_GNU = """\
# comment
{d1}  debian-12-genericcloud-amd64.raw
{d2} *debian-12-genericcloud-amd64.qcow2
{d3}  ./sub/other.img
"""


def test_find_in_sums_gnu_format():
    d1, d2, d3 = ("1" * 64), ("2" * 64), ("3" * 64)
    text = SUMS_GNU.format(d1=d1, d2=d2, d3=d3)
    assert fetch.find_in_sums(text, "debian-12-genericcloud-amd64.raw", "sha256") == d1
    assert fetch.find_in_sums(text, "debian-12-genericcloud-amd64.qcow2", "sha256") == d2
    assert fetch.find_in_sums(text, "other.img", "sha256") == d3
    assert fetch.find_in_sums(text, "missing.img", "sha256") is None
    # a sha256 line is not taken for a sha512 request
    assert fetch.find_in_sums(text, "other.img", "sha512") is None


def test_resolve_checksum_reads_a_local_sums_file(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("%s  image.raw\n" % SHA256_OF_ABC)
    params = {"url": "http://h/x/image.raw", "checksum": "sha256:%s" % sums}
    assert fetch.resolve_checksum(ImageSpec.from_params(params)) == ("sha256", SHA256_OF_ABC)
    params["url"] = "http://h/x/other.raw"
    with pytest.raises(VirtfleetError, match="no sha256 line for 'other.raw'"):
        fetch.resolve_checksum(ImageSpec.from_params(params))


def test_find_in_sums_bsd_format_matches_algorithm():
    text = "SHA256 (a.img) = %s\nSHA512 (a.img) = %s\n" % ("a" * 64, "b" * 128)
    assert fetch.find_in_sums(text, "a.img", "sha256") == "a" * 64
    assert fetch.find_in_sums(text, "a.img", "sha512") == "b" * 128


# ---- retries ----------------------------------------------------------------------------------------

def test_retry_delays_backoff_is_capped():
    assert fetch.retry_delays(0, 1) == []
    assert fetch.retry_delays(4, 0.5) == [0.5, 1, 2, 4]
    assert fetch.retry_delays(9, 1)[-1] == 60


# ---- compression ------------------------------------------------------------------------------------

PAYLOAD = os.urandom(1 << 16) + b"\0" * (3 << 20) + b"tail"


@pytest.mark.parametrize("kind, compress", [
    ("gzip", gzip.compress), ("xz", lzma.compress), ("bzip2", bz2.compress),
])
def test_detect_compression_by_magic(kind, compress):
    assert fetch.detect_compression(compress(b"hello")) == kind


def test_detect_compression_ignores_lookalikes():
    assert fetch.detect_compression(b"BZh9 not really bzip2") is None
    assert fetch.detect_compression(b"QFI\xfb\0\0\0\3") is None
    assert fetch.detect_compression(b"\0" * 512) is None
    assert fetch.detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"


def _stream_through(tmp_path, data, algo="sha256", max_bytes=1 << 30, length="auto"):
    dest = str(tmp_path / "out")
    if os.path.exists(dest):
        os.unlink(dest)
    stream = io.BytesIO(data)
    result = fetch.stream_to_file(stream, len(data) if length == "auto" else length, dest, algo, max_bytes,
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
    with pytest.raises(fetch._TransientError, match="after 3 of 10 bytes"):
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
    cause, is_transient = fetch._describe_url_error(exc)
    assert fragment in cause and is_transient is transient


def test_describe_url_error_unwraps_urlerror_reasons():
    import http.client
    import ssl
    import urllib.error

    assert fetch._describe_url_error(urllib.error.URLError(ConnectionRefusedError(111, "x"))) == \
        ("connection refused", True)
    assert fetch._describe_url_error(urllib.error.URLError(TimeoutError())) == ("timed out", True)
    cause, transient = fetch._describe_url_error(urllib.error.URLError(
        ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")))
    assert "validate_certs" in cause and not transient
    cause, transient = fetch._describe_url_error(http.client.IncompleteRead(b"abc", 10))
    assert "closed the connection" in cause and transient


def test_with_retries_retries_transient_failures_then_names_the_attempts(monkeypatch):
    sleeps = []
    monkeypatch.setattr(fetch.time, "sleep", sleeps.append)
    calls = []

    def always_refused():
        calls.append(1)
        raise fetch._TransientError("connection refused")

    with pytest.raises(VirtfleetError, match=r"cannot fetch http://h/a: connection refused \(after 4 attempts\)"):
        fetch._with_retries(always_refused, "http://u:p@h/a", Transport(retries=3, retry_delay=0.5))
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]

    outcomes = [fetch._TransientError("timed out"), "done"]

    def flaky():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert fetch._with_retries(flaky, "http://h/a", Transport(retries=1, retry_delay=0)) == "done"


def test_with_retries_explains_a_timeout():
    def slow():
        raise fetch._TransientError("timed out")

    with pytest.raises(VirtfleetError, match=r"no data for 7 s; raise timeout"):
        fetch._with_retries(slow, "http://h/a", Transport(retries=0, timeout=7))


# ---- sparse writing (issue 10 item 15) ---------------------------------------------------------------

class _Trickle(io.RawIOBase):
    """A stream that hands out ``step`` bytes per read, whatever is asked (like a slow socket)."""

    def __init__(self, data, step):
        self._data, self._pos, self._step = data, 0, step

    def read(self, size=-1):
        piece = self._data[self._pos:self._pos + self._step]
        self._pos += len(piece)
        return piece


def _allocated(path):
    return os.stat(path).st_blocks * 512


def test_stream_to_file_leaves_all_zero_blocks_as_holes(tmp_path):
    data = os.urandom(1 << 16) + b"\0" * (8 << 20) + os.urandom(5000) + b"\0" * (3 << 20)
    result, written = _stream_through(tmp_path, data)
    assert written == data and result["written"] == len(data)
    assert result["digest"] == hashlib.sha256(data).hexdigest()
    # 64 KiB + 5000 bytes of data (5000 bytes touch two 4 KiB blocks); the zeros, and the tail, are holes
    assert _allocated(str(tmp_path / "out")) <= (1 << 16) + 3 * 4096


@pytest.mark.parametrize("step", [1000, 4096, 4097, 70000])
def test_stream_to_file_is_sparse_and_exact_whatever_the_read_sizes(tmp_path, step):
    block = 4096
    data = b"".join(os.urandom(block) if n % 3 == 0 else b"\0" * block for n in range(64)) + b"\0\0x"
    dest = str(tmp_path / ("out-%d" % step))
    result = fetch.stream_to_file(_Trickle(data, step), len(data), dest, "sha256", 1 << 30, "http://h/a")
    with open(dest, "rb") as handle:
        assert handle.read() == data
    assert result["digest"] == hashlib.sha256(data).hexdigest()
    data_blocks = len([n for n in range(64) if n % 3 == 0]) + 1  # the last, partial block holds an x
    assert _allocated(dest) <= (data_blocks + 2) * block


def test_stream_to_file_writes_decompressed_zeros_as_holes(tmp_path):
    data = os.urandom(1 << 16) + b"\0" * (16 << 20)
    result, written = _stream_through(tmp_path, gzip.compress(data))
    assert written == data and result["compression"] == "gzip"
    assert _allocated(str(tmp_path / "out")) <= (1 << 16) + 4096
