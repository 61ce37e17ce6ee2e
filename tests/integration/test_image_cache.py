"""image_cache against real files, a real HTTP server on 127.0.0.1 and real qemu-img.

Every test runs the module file as Ansible does (tests.support.runner.run_module) and asserts on
what is on disk and on what the server saw.
"""

from __future__ import annotations

import base64
import bz2
import functools
import gzip
import hashlib
import http.server
import json
import lzma
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import pytest

from tests.integration.conftest import SCRATCH, ImageServer, destroy_domains
from tests.support import hostile_images
from tests.support.runner import COLLECTIONS, PYTHON, REPO, module_path, run_module, run_playbook

from ansible_collections.virtfleet.libvirt.plugins.module_utils._image import record as image_record

MiB = 1 << 20


# ---- environment and server --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def qemu_img_host():
    """qemu-img on PATH (image_cache converts and checks with it). Fails loudly when missing."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is missing: run scripts/setup-host.sh", pytrace=False)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files and, per file name, misbehaves as a test asks (see ``Behaviour``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        name = self.path.split("?", 1)[0].lstrip("/")
        with server.lock:
            server.gets.append(name)
            server.headers_seen.append(dict(self.headers))
            fail = server.fail_with.get(name)
            if fail and fail[1] > 0:
                server.fail_with[name] = (fail[0], fail[1] - 1)
            else:
                fail = None
            cut = None if fail else server.cut_after.get(name)
            if cut and cut[1] > 0:
                server.cut_after[name] = (cut[0], cut[1] - 1)
            else:
                cut = None
        if server.auth and self.headers.get("Authorization") != server.auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="images"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fail:
            self.send_error(fail[0])
            return
        delay = server.delay.get(name)
        if delay:
            time.sleep(delay)
        if cut:
            path = self.translate_path(self.path)
            size = os.path.getsize(path)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(path, "rb") as handle:
                self.wfile.write(handle.read(cut[0]))
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        slow = server.slow.get(name)
        if slow:
            path = self.translate_path(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.end_headers()
            with open(path, "rb") as handle:
                while True:
                    block = handle.read(slow[0])
                    if not block:
                        break
                    try:
                        self.wfile.write(block)
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(slow[1])
            return
        super().do_GET()


@pytest.fixture
def server(qemu_img_host, tmp_path):
    """ImageServer with our misbehaving handler.

    Per file name: ``fail_with[name] = (status, times)``, ``cut_after[name] = (bytes, times)`` (close the
    connection mid-body), ``delay[name] = seconds`` before answering, ``slow[name] = (block, pause)``;
    ``auth`` is the Authorization header required; ``gets`` lists every GET.
    """
    root = tmp_path / "www"
    root.mkdir()
    srv = ImageServer(str(root))
    httpd = srv.httpd
    httpd.RequestHandlerClass = functools.partial(_Handler, directory=str(root))
    httpd.lock = threading.Lock()
    httpd.gets = []
    httpd.headers_seen = []
    httpd.fail_with = {}
    httpd.cut_after = {}
    httpd.delay = {}
    httpd.slow = {}
    httpd.auth = None
    yield srv
    srv.close()


@pytest.fixture
def instances(tmp_path):
    path = tmp_path / "instances"
    return str(path)


# ---- images -----------------------------------------------------------------------------------------

def _raw_image(path: str, size: int = 4 * MiB) -> str:
    """A raw disk with random data at a few places (so conversions have something to carry)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset in (0, size // 3, size - 65536):
            handle.seek(offset)
            handle.write(os.urandom(65536))
    return path


def _qemu(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def _qcow2_from(raw: str, dst: str) -> str:
    _qemu("convert", "-f", "raw", "-O", "qcow2", raw, dst)
    return dst


def _info(path: str, fmt: str) -> Dict:
    return json.loads(_qemu("info", "-f", fmt, "--output=json", path))


def _same_content(a: str, a_fmt: str, b: str, b_fmt: str) -> bool:
    return subprocess.run(["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, a, b],
                          capture_output=True, check=False).returncode == 0


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _base_entries(instances: str) -> List[str]:
    base = os.path.join(instances, "_base")
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def _record(result: Dict) -> Dict:
    with open(result["path"] + ".info.json") as handle:
        return json.load(handle)


def _ok(result: Dict) -> Dict:
    assert result["_rc"] == 0 and not result.get("failed"), result
    return result


def _failed(result: Dict) -> str:
    assert result["_rc"] != 0 and result.get("failed"), result
    assert "Traceback" not in result["_stderr"] and "internal error" not in result["msg"], result
    print("module message:", result["msg"])  # shown with -s, and on failure
    return result["msg"]


@pytest.fixture
def raw_image(tmp_path, server):
    path = _raw_image(str(tmp_path / "www" / "disk.raw"))
    return {"path": path, "url": server.url("disk.raw"), "sha256": _sha256(path)}


@pytest.fixture
def qcow2_image(tmp_path, server, raw_image):
    path = _qcow2_from(raw_image["path"], str(tmp_path / "www" / "disk.qcow2"))
    return {"path": path, "url": server.url("disk.qcow2"), "sha256": _sha256(path), "raw": raw_image["path"]}


# ---- fetching ----------------------------------------------------------------------------------------

def test_fetch_raw_over_http_caches_raw_with_a_correct_record(server, raw_image, instances):
    result = _ok(run_module("image_cache", {"url": raw_image["url"], "checksum": "sha256:" + raw_image["sha256"],
                                            "instances_path": instances}))
    assert result["changed"] and result["fetched"]
    assert result["format"] == "raw" and result["source_format"] == "raw"
    assert result["virtual_size"] == 4 * MiB and result["bytes"] == 4 * MiB
    assert result["checksum"] == "sha256:" + raw_image["sha256"]
    assert os.path.dirname(result["path"]) == os.path.join(instances, "_base")
    assert _sha256(result["path"]) == raw_image["sha256"]
    assert os.stat(os.path.join(instances, "_base")).st_mode & 0o777 == 0o755
    assert os.stat(result["path"]).st_mode & 0o777 == 0o644
    record = _record(result)
    stat = os.stat(result["path"])
    assert record["url"] == raw_image["url"]
    assert record["checksum"] == "sha256:" + raw_image["sha256"]
    assert (record["format"], record["source_format"]) == ("raw", "raw")
    assert record["virtual_size"] == 4 * MiB and record["size"] == stat.st_size
    assert record["mtime_ns"] == stat.st_mtime_ns and record["mtime"] == stat.st_mtime
    assert record["inspector_version"] >= 1 and record["fetched_at"].endswith("Z")
    assert _base_entries(instances) == sorted([os.path.basename(result["path"]),
                                               os.path.basename(result["path"]) + ".info.json"])


def test_qcow2_source_is_converted_to_raw(server, qcow2_image, instances):
    result = _ok(run_module("image_cache", {"url": qcow2_image["url"], "format": "qcow2", "cache_format": "raw",
                                            "instances_path": instances}))
    assert result["format"] == "raw" and result["source_format"] == "qcow2"
    assert "convert" in result["actions"]
    info = _info(result["path"], "raw")
    assert info["format"] == "raw" and info["virtual-size"] == 4 * MiB == result["virtual_size"]
    assert _same_content(result["path"], "raw", qcow2_image["raw"], "raw")
    assert _record(result)["format"] == "raw"
    assert len(_base_entries(instances)) == 2


def test_cache_format_qcow2_keeps_qcow2(server, qcow2_image, instances):
    result = _ok(run_module("image_cache", {"url": qcow2_image["url"], "cache_format": "qcow2",
                                            "instances_path": instances}))
    assert result["format"] == "qcow2" and "convert" not in result["actions"]
    assert _sha256(result["path"]) == qcow2_image["sha256"]
    assert _info(result["path"], "qcow2")["virtual-size"] == 4 * MiB
    assert _record(result)["format"] == "qcow2"


def test_raw_source_with_cache_format_qcow2_is_converted(server, raw_image, instances):
    result = _ok(run_module("image_cache", {"url": raw_image["url"], "cache_format": "qcow2",
                                            "instances_path": instances}))
    assert result["format"] == "qcow2" and _info(result["path"], "qcow2")["format"] == "qcow2"
    assert _same_content(result["path"], "qcow2", raw_image["path"], "raw")


def test_second_run_is_unchanged_and_does_not_download(server, raw_image, instances):
    args = {"url": raw_image["url"], "checksum": "sha256:" + raw_image["sha256"], "instances_path": instances}
    first = _ok(run_module("image_cache", args))
    mtime = os.stat(first["path"]).st_mtime_ns
    second = _ok(run_module("image_cache", args))
    assert second["changed"] is False and second["fetched"] is False and second["bytes"] == 0
    assert second["path"] == first["path"] and second["virtual_size"] == first["virtual_size"]
    assert server.httpd.gets == ["disk.raw"]
    assert os.stat(first["path"]).st_mtime_ns == mtime


def test_check_mode_downloads_nothing(server, raw_image, instances):
    result = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances}, check=True))
    assert result["changed"] is True and result["fetched"] is False and "fetch" in result["actions"]
    assert server.httpd.gets == []
    assert not os.path.exists(instances)
    _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances}))
    again = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances}, check=True))
    assert again["changed"] is False and server.httpd.gets == ["disk.raw"]


def test_diff_mode_shows_the_cached_image_before_and_after(server, raw_image, instances):
    """Issue 13: image_cache claims diff_mode support; it returns the cached image's state before and after."""
    args = {"url": raw_image["url"], "instances_path": instances}
    checked = _ok(run_module("image_cache", args, check=True, diff=True))
    assert checked["diff"]["before"] == {"path": checked["path"], "state": "absent"}
    assert checked["diff"]["after"]["state"] == "present"
    first = _ok(run_module("image_cache", args, diff=True))
    after = first["diff"]["after"]
    assert first["diff"]["before"]["state"] == "absent" and after["state"] == "present"
    assert (after["path"], after["format"], after["virtual_size"]) == (first["path"], "raw", 4 * MiB)
    again = _ok(run_module("image_cache", args, diff=True))
    assert again["diff"] == {"before": after, "after": after}
    assert "diff" not in _ok(run_module("image_cache", args))  # only in diff mode
    removed = _ok(run_module("image_cache", dict(args, state="absent"), diff=True))
    assert removed["diff"] == {"before": after, "after": {"path": first["path"], "state": "absent"}}


def test_file_url_and_plain_path_sources(tmp_path, qemu_img_host, instances):
    raw = _raw_image(str(tmp_path / "local.raw"))
    by_path = _ok(run_module("image_cache", {"url": raw, "instances_path": instances}))
    by_url = _ok(run_module("image_cache", {"url": "file://" + raw, "instances_path": instances}))
    assert by_path["fetched"] and _sha256(by_path["path"]) == _sha256(raw)
    # file:///x and /x are the same identity: the second run reuses the first one's file
    assert by_url["path"] == by_path["path"] and by_url["changed"] is False
    missing = _failed(run_module("image_cache", {"url": str(tmp_path / "nope.raw"), "instances_path": instances}))
    assert "nope.raw" in missing and "No such file" in missing


def test_credentials_never_reach_names_records_or_messages(server, raw_image, instances):
    server.httpd.auth = "Basic " + base64.b64encode(b"fleet:s3cret-pw").decode()
    url = raw_image["url"].replace("http://", "http://fleet:s3cret-pw@")
    result = _ok(run_module("image_cache", {"url": url, "instances_path": instances, "force_basic_auth": True}))
    assert "s3cret" not in json.dumps(_record(result))
    assert _record(result)["url"] == raw_image["url"]
    via_options = _ok(run_module("image_cache", {"url": raw_image["url"], "url_username": "fleet",
                                                 "url_password": "s3cret-pw", "force_basic_auth": True,
                                                 "instances_path": instances}))
    assert via_options["path"] == result["path"] and via_options["changed"] is False
    bad = run_module("image_cache", {"url": raw_image["url"].replace("http://", "http://fleet:wrong-pw@")
                                     .replace("disk.raw", "other.raw"), "instances_path": instances})
    msg = _failed(bad)
    assert "401" in msg and "wrong-pw" not in msg
    assert "wrong-pw" not in json.dumps({k: v for k, v in bad.items() if k != "_stderr"})  # invocation too


def test_headers_are_sent(server, raw_image, instances):
    _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances,
                                   "headers": {"X-Token": "tok-123"}}))
    assert server.httpd.headers_seen[0].get("X-Token") == "tok-123"


@pytest.mark.parametrize("state", ["present", "absent", "pruned"])
@pytest.mark.parametrize("relative", ["", "rel-instances-%s" % uuid.uuid4().hex[:6], "./x/../y"])
def test_a_relative_or_empty_instances_path_is_refused(server, raw_image, state, relative):
    """Issue 10 item 5: files would land in the playbook's directory; refused as domain_xml refuses it."""
    args = {"instances_path": relative, "state": state}
    if state != "pruned":
        args["url"] = raw_image["url"]
    msg = _failed(run_module("image_cache", args))
    assert "instances_path must be an absolute path" in msg
    assert server.httpd.gets == []
    if relative:
        assert not os.path.exists(os.path.join(REPO, relative)), "files landed in the working directory"


# ---- failures leave nothing behind --------------------------------------------------------------------

def test_404_fails_clearly_and_leaves_nothing(server, instances):
    msg = _failed(run_module("image_cache", {"url": server.url("missing.img"), "instances_path": instances}))
    assert "404" in msg and server.url("missing.img") in msg
    assert _base_entries(instances) == []


def test_wrong_checksum_fails_with_both_digests_and_keeps_nothing(server, raw_image, instances):
    wrong = "0" * 64
    msg = _failed(run_module("image_cache", {"url": raw_image["url"], "checksum": "sha256:" + wrong,
                                             "instances_path": instances}))
    assert "checksum" in msg and wrong in msg and raw_image["sha256"] in msg and raw_image["url"] in msg
    assert _base_entries(instances) == []


def test_declared_raw_that_is_qcow2_is_refused(server, qcow2_image, instances):
    msg = _failed(run_module("image_cache", {"url": qcow2_image["url"], "format": "raw",
                                             "instances_path": instances}))
    assert qcow2_image["url"] in msg and "qcow2" in msg and "virtfleet-tmp" not in msg
    assert _base_entries(instances) == []


def test_max_virtual_size_is_enforced(server, qcow2_image, instances):
    msg = _failed(run_module("image_cache", {"url": qcow2_image["url"], "max_virtual_size": "1M",
                                             "instances_path": instances}))
    assert "virtual size" in msg and qcow2_image["url"] in msg
    assert _base_entries(instances) == []


def test_connection_refused(qemu_img_host, instances):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = "http://127.0.0.1:%d/x.img" % port
    msg = _failed(run_module("image_cache", {"url": url, "instances_path": instances, "retries": 0}))
    assert "connection refused" in msg.lower() and url in msg
    assert _base_entries(instances) == []


def test_timeout(server, raw_image, instances):
    server.httpd.delay["disk.raw"] = 4
    started = time.monotonic()
    msg = _failed(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances,
                                             "timeout": 1, "retries": 0}))
    assert "timed out" in msg and raw_image["url"] in msg
    assert time.monotonic() - started < 4
    assert _base_entries(instances) == []


def test_server_closing_mid_body_leaves_nothing_and_next_run_succeeds(server, raw_image, instances):
    server.httpd.cut_after["disk.raw"] = (MiB, 1)
    msg = _failed(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances, "retries": 0}))
    assert raw_image["url"] in msg and "closed" in msg
    assert _base_entries(instances) == []
    result = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances, "retries": 0}))
    assert _sha256(result["path"]) == raw_image["sha256"]


def test_transient_failures_are_retried_with_backoff(server, raw_image, instances):
    server.httpd.fail_with["disk.raw"] = (503, 1)
    server.httpd.cut_after["disk.raw"] = (1000, 1)
    result = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances,
                                            "retries": 3, "retry_delay": 0.1}))
    assert server.httpd.gets == ["disk.raw"] * 3
    assert _sha256(result["path"]) == raw_image["sha256"]
    server.httpd.fail_with["other.raw"] = (503, 5)
    shutil.copy(raw_image["path"], os.path.join(server.root, "other.raw"))
    msg = _failed(run_module("image_cache", {"url": server.url("other.raw"), "instances_path": instances,
                                             "retries": 2, "retry_delay": 0.1}))
    assert "503" in msg and "after 3 attempts" in msg


@pytest.mark.parametrize("option, value", [("retry_delay", -5), ("retry_delay", "nan"), ("timeout", 0),
                                           ("retries", -1), ("lock_timeout", -3)])
def test_out_of_range_numbers_are_refused_before_anything_runs(server, raw_image, instances, option, value):
    """Issue 10 item 11: retry_delay -5 reached time.sleep and ended as 'internal error ... ValueError'."""
    server.httpd.fail_with["disk.raw"] = (503, 5)
    msg = _failed(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances,
                                             "retries": 1, option: value}))
    assert msg.startswith("%s must be a number" % option) and "got" in msg
    assert server.httpd.gets == [] and _base_entries(instances) == []


def test_a_killed_download_leaves_no_usable_file(server, raw_image, instances, tmp_path):
    big = _raw_image(os.path.join(server.root, "big.raw"), 16 * MiB)
    server.httpd.slow["big.raw"] = (MiB, 0.2)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "url": server.url("big.raw"), "instances_path": instances, "_ansible_module_name": "image_cache",
        "_ansible_tmpdir": tempfile.gettempdir(), "_ansible_remote_tmp": tempfile.gettempdir()}}))
    proc = subprocess.Popen([PYTHON, module_path("image_cache"), str(args_file)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=COLLECTIONS), cwd=REPO)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any("virtfleet-tmp" in e for e in _base_entries(instances)):
        time.sleep(0.01)
    time.sleep(0.3)
    assert proc.poll() is None, "the download finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = _base_entries(instances)
    assert all("virtfleet-tmp" in entry for entry in leftovers), leftovers
    server.httpd.slow.pop("big.raw")
    result = _ok(run_module("image_cache", {"url": server.url("big.raw"), "instances_path": instances}))
    assert _sha256(result["path"]) == _sha256(big)
    assert not any("virtfleet-tmp" in entry for entry in _base_entries(instances))
    assert leftovers, "the killed run should have left its (unusable) temporary file for the next run to clean"


def test_concurrent_runs_download_once_and_all_succeed(server, raw_image, instances):
    big = _raw_image(os.path.join(server.root, "shared.raw"), 32 * MiB)
    args = {"url": server.url("shared.raw"), "checksum": "sha256:" + _sha256(big), "instances_path": instances}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: run_module("image_cache", args), range(8)))
    for result in results:
        _ok(result)
    assert server.httpd.gets == ["shared.raw"]
    assert len({r["path"] for r in results}) == 1
    assert sum(1 for r in results if r["fetched"]) == 1
    assert _sha256(results[0]["path"]) == _sha256(big)
    assert len(_base_entries(instances)) == 2


@pytest.fixture
def small_tmpfs():
    """A 6 MiB tmpfs this test mounts (and unmounts); fails loudly without the privilege to mount."""
    root = os.path.join(SCRATCH, "image-cache-full-" + uuid.uuid4().hex[:8])
    os.makedirs(root)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", root], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        os.rmdir(root)
        pytest.fail("cannot mount a small tmpfs for the full-disk test (needs root): %s" % exc.stderr, pytrace=False)
    try:
        yield root
    finally:
        subprocess.run(["umount", root], check=False)
        os.rmdir(root)


def test_full_disk_fails_clearly_and_leaves_the_cache_as_it_was(server, raw_image, small_tmpfs):
    instances = os.path.join(small_tmpfs, "instances")
    _raw_image(os.path.join(server.root, "small.raw"), MiB)
    small = _ok(run_module("image_cache", {"url": server.url("small.raw"), "instances_path": instances}))
    before = _base_entries(instances)
    big = os.path.join(server.root, "big.raw")
    with open(big, "wb") as handle:  # random throughout: the cache is sparse, zeros would take no space
        handle.write(os.urandom(16 * MiB))
    msg = _failed(run_module("image_cache", {"url": server.url("big.raw"), "instances_path": instances}))
    assert "no space left" in msg and server.url("big.raw") in msg
    assert _base_entries(instances) == before and os.path.exists(small["path"])
    assert big


def _leave_free(root: str, free: int) -> str:
    """Fill the file system of ``root`` until exactly ``free`` bytes are left; returns the filler."""
    filler = os.path.join(root, "filler")
    with open(filler, "ab") as handle:
        handle.write(b"\1" * (shutil.disk_usage(root).free - free))
    assert shutil.disk_usage(root).free == free
    return filler


def _warnings(result: Dict) -> List[str]:
    """The texts of a module's warnings (ansible-core 2.19 returns them as structured events)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


def _no_temps(instances: str) -> None:
    assert not any("virtfleet-tmp" in entry for entry in _base_entries(instances)), _base_entries(instances)


def test_a_disk_that_fills_with_the_record_keeps_nothing_under_the_final_name(server, small_tmpfs):
    """Issue 10 item 7: the image fits, its record does not. Nothing is left under the final name (which
    every later run would refuse or re-fetch into the same full disk), and the message says which file
    needed how much."""
    instances = os.path.join(small_tmpfs, "instances")
    image = os.path.join(server.root, "full.raw")
    with open(image, "wb") as handle:
        handle.write(os.urandom(MiB))  # no zero block: it takes exactly 1 MiB
    args = {"url": server.url("full.raw"), "instances_path": instances}
    final = os.path.join(instances, "_base", image_record.base_name(args["url"], None, "raw"))
    for directory in ("_base", "locks"):
        os.makedirs(os.path.join(instances, directory))
    _leave_free(small_tmpfs, MiB)
    for _attempt in range(2):  # the next run meets the same disk, and says the same
        msg = _failed(run_module("image_cache", args))
        assert "no space left" in msg and server.url("full.raw") in msg
        assert "record" in msg and final + ".info.json" in msg and "needs up to" in msg, msg
        assert not os.path.exists(final) and not os.path.exists(final + ".info.json")
        _no_temps(instances)
        assert shutil.disk_usage(small_tmpfs).free == MiB


def test_an_unrecorded_file_left_under_the_final_name_is_replaced_and_reported(server, small_tmpfs):
    """What an earlier version left after a full disk: a complete file under its final name without a
    record. It is never served, its space is freed for the new copy, and the run says what it found."""
    instances = os.path.join(small_tmpfs, "instances")
    image = os.path.join(server.root, "left.raw")
    with open(image, "wb") as handle:
        handle.write(os.urandom(MiB))
    args = {"url": server.url("left.raw"), "instances_path": instances}
    final = os.path.join(instances, "_base", image_record.base_name(args["url"], None, "raw"))
    for directory in ("_base", "locks"):
        os.makedirs(os.path.join(instances, directory))
    shutil.copy(image, final)  # the leftover: complete, but no record
    _leave_free(small_tmpfs, MiB // 2)  # not enough for a second copy beside it
    result = _ok(run_module("image_cache", args))
    assert result["fetched"] and _sha256(result["path"]) == _sha256(image)
    assert any(final in warning and "not usable (no valid record)" in warning for warning in _warnings(result)), \
        _warnings(result)
    assert _record(result)["size"] == MiB
    _no_temps(instances)


@pytest.fixture
def qemu_img_spy(tmp_path, monkeypatch):
    """A qemu-img on PATH that logs every call, then runs the real one; returns the log's path."""
    real = shutil.which("qemu-img")
    spy_dir = tmp_path / "spy-bin"
    spy_dir.mkdir()
    log = tmp_path / "qemu-img-calls.log"
    script = spy_dir / "qemu-img"
    script.write_text('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' % (log, real))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (spy_dir, os.environ["PATH"]))
    return log


def _module_options_for(case: str) -> Dict:
    options = hostile_images.inspect_options(case)
    args = {}
    if "declared_format" in options:
        args["format"] = options["declared_format"]
    if "max_virtual_size" in options:
        args["max_virtual_size"] = str(options["max_virtual_size"])
    return args


@pytest.mark.parametrize("case, build, expected", hostile_images.CORPUS, ids=[c[0] for c in hostile_images.CORPUS])
def test_hostile_images_are_refused_before_qemu_img_reads_them(server, instances, tmp_path, qemu_img_spy,
                                                               case, build, expected):
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    image = build(str(build_dir))
    shutil.copy(image, os.path.join(server.root, "upload.img"))
    if qemu_img_spy.exists():
        qemu_img_spy.unlink()  # the builder itself used qemu-img
    url = server.url("upload.img")
    msg = _failed(run_module("image_cache", dict(_module_options_for(case), url=url, instances_path=instances)))
    assert expected in msg and url in msg and "virtfleet-tmp" not in msg
    assert not qemu_img_spy.exists(), "qemu-img ran on a hostile image: %s" % qemu_img_spy.read_text()
    assert _base_entries(instances) == []


def test_the_spy_sees_qemu_img_for_a_conversion(server, qcow2_image, instances, qemu_img_spy):
    _ok(run_module("image_cache", {"url": qcow2_image["url"], "instances_path": instances}))
    assert "convert -f qcow2 -O raw" in qemu_img_spy.read_text()


# ---- compressed images and SUMS files -----------------------------------------------------------------

@pytest.mark.parametrize("suffix, compress, kind", [
    (".gz", gzip.compress, "gzip"), (".xz", lzma.compress, "xz"), (".bz2", bz2.compress, "bzip2"),
])
def test_compressed_images_are_recognised_by_magic_and_decompressed(server, qcow2_image, instances,
                                                                    suffix, compress, kind):
    with open(qcow2_image["path"], "rb") as handle:
        packed = compress(handle.read())
    name = "disguised" + (".img" if kind == "xz" else suffix)  # the suffix does not matter
    with open(os.path.join(server.root, name), "wb") as handle:
        handle.write(packed)
    result = _ok(run_module("image_cache", {"url": server.url(name), "instances_path": instances,
                                            "checksum": "sha256:" + hashlib.sha256(packed).hexdigest()}))
    assert result["compression"] == kind and result["source_format"] == "qcow2" and result["format"] == "raw"
    assert "decompress" in result["actions"] and result["bytes"] == len(packed)
    assert _same_content(result["path"], "raw", qcow2_image["raw"], "raw")


def test_checksum_from_a_sums_file(server, raw_image, qcow2_image, instances):
    sums = "%s  disk.raw\n%s *disk.qcow2\n" % (raw_image["sha256"], qcow2_image["sha256"])
    with open(os.path.join(server.root, "SHA256SUMS"), "w") as handle:
        handle.write(sums)
    result = _ok(run_module("image_cache", {"url": qcow2_image["url"], "instances_path": instances,
                                            "checksum": "sha256:" + server.url("SHA256SUMS")}))
    assert result["checksum"] == "sha256:" + qcow2_image["sha256"]
    with open(os.path.join(server.root, "SHA256SUMS"), "w") as handle:
        handle.write("%s  other.img\n" % raw_image["sha256"])
    shutil.copy(raw_image["path"], os.path.join(server.root, "fresh.raw"))
    msg = _failed(run_module("image_cache", {"url": server.url("fresh.raw"), "instances_path": instances,
                                             "checksum": "sha256:" + server.url("SHA256SUMS")}))
    assert "fresh.raw" in msg and "SHA256SUMS" in msg
    assert server.httpd.gets.count("fresh.raw") == 0


def test_sums_file_with_a_wrong_digest_fails(server, raw_image, instances):
    with open(os.path.join(server.root, "SHA512SUMS"), "w") as handle:
        handle.write("%s  disk.raw\n" % ("e" * 128))
    msg = _failed(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances,
                                             "checksum": "sha512:" + server.url("SHA512SUMS")}))
    assert "checksum" in msg and "e" * 128 in msg
    assert _base_entries(instances) == []


# ---- re-inspection and verification ---------------------------------------------------------------

def test_files_cached_by_an_older_inspector_are_inspected_again(server, qcow2_image, instances):
    result = _ok(run_module("image_cache", {"url": qcow2_image["url"], "cache_format": "source",
                                            "instances_path": instances}))
    record_path = result["path"] + ".info.json"
    record = _record(result)
    current = record["inspector_version"]
    record["inspector_version"] = 0
    with open(record_path, "w") as handle:
        json.dump(record, handle)
    again = _ok(run_module("image_cache", {"url": qcow2_image["url"], "cache_format": "source",
                                           "instances_path": instances}))
    assert again["changed"] and again["actions"] == ["reinspect"] and not again["fetched"]
    assert _record(again)["inspector_version"] == current
    assert server.httpd.gets == ["disk.qcow2"]
    # a cached file that no longer passes the inspector is removed, not used
    record = _record(again)
    record["inspector_version"] = 0
    with open(record_path, "w") as handle:
        json.dump(record, handle)
    _qemu("rebase", "-u", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", result["path"])
    record["size"] = os.stat(result["path"]).st_size
    record["mtime_ns"] = os.stat(result["path"]).st_mtime_ns
    with open(record_path, "w") as handle:
        json.dump(record, handle)
    msg = _failed(run_module("image_cache", {"url": qcow2_image["url"], "cache_format": "source",
                                             "instances_path": instances}))
    assert "re-inspection" in msg and "backing" in msg
    assert not os.path.exists(result["path"])


def test_verify_full_detects_a_tampered_file_with_the_same_size_and_mtime(server, raw_image, instances):
    args = {"url": raw_image["url"], "checksum": "sha256:" + raw_image["sha256"], "instances_path": instances}
    result = _ok(run_module("image_cache", args))
    stat = os.stat(result["path"])
    with open(result["path"], "r+b") as handle:
        handle.seek(100)
        handle.write(b"tampered")
    os.utime(result["path"], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _ok(run_module("image_cache", args))["changed"] is False  # quick trusts the record
    msg = _failed(run_module("image_cache", dict(args, verify="full")))
    assert "does not match its record" in msg and raw_image["sha256"] in msg


def test_a_changed_cached_file_is_fetched_again(server, raw_image, instances):
    args = {"url": raw_image["url"], "instances_path": instances}
    result = _ok(run_module("image_cache", args))
    with open(result["path"], "ab") as handle:
        handle.write(b"x")
    again = _ok(run_module("image_cache", args))
    assert again["fetched"] and _sha256(again["path"]) == raw_image["sha256"]
    assert server.httpd.gets == ["disk.raw", "disk.raw"]


# ---- sparse cache (issue 10 item 15) -----------------------------------------------------------------

@pytest.mark.parametrize("source", ["http", "file"])
def test_the_cache_is_sparse(server, tmp_path, instances, source):
    """A 256 MiB raw image holding 8 MiB of data takes about 8 MiB in the cache, not 256."""
    path = os.path.join(server.root, "sparse.raw")
    with open(path, "wb") as handle:
        handle.truncate(256 * MiB)
        for offset in (0, 100 * MiB, 256 * MiB - 4 * MiB):
            handle.seek(offset)
            handle.write(os.urandom(2 * MiB + 1000))
    url = server.url("sparse.raw") if source == "http" else path
    result = _ok(run_module("image_cache", {"url": url, "instances_path": instances,
                                            "checksum": "sha256:" + _sha256(path)}))
    assert result["size"] == 256 * MiB and _sha256(result["path"]) == _sha256(path)
    allocated = os.stat(result["path"]).st_blocks * 512
    assert allocated == result["actual_size"] and allocated <= 3 * (2 * MiB + 4096), allocated
    assert _record(result)["file_sha256"] == _sha256(path)  # hashed as it arrived, holes included


# ---- absent and pruned --------------------------------------------------------------------------------

def _overlay(instances: str, guest: str, base: str, base_fmt: str, file_name: str = "disk") -> str:
    guest_dir = os.path.join(instances, guest)
    os.makedirs(guest_dir, exist_ok=True)
    disk = os.path.join(guest_dir, file_name)
    _qemu("create", "-f", "qcow2", "-b", base, "-F", base_fmt, disk)
    with open(os.path.join(guest_dir, "disk.info.json"), "w") as handle:
        json.dump({file_name: {"format": "qcow2", "kind": "root"}}, handle)
    return disk


def test_absent_refuses_a_base_in_use_unless_forced(server, raw_image, instances):
    args = {"url": raw_image["url"], "instances_path": instances}
    result = _ok(run_module("image_cache", args))
    disk = _overlay(instances, "web1", result["path"], "raw")
    msg = _failed(run_module("image_cache", dict(args, state="absent")))
    assert disk in msg and "force" in msg and os.path.exists(result["path"])
    check = _ok(run_module("image_cache", dict(args, state="absent", force=True), check=True))
    assert check["changed"] and os.path.exists(result["path"])
    forced = _ok(run_module("image_cache", dict(args, state="absent", force=True)))
    assert forced["changed"] and forced["users"] == [disk]
    assert _base_entries(instances) == []
    assert _ok(run_module("image_cache", dict(args, state="absent")))["changed"] is False


def test_absent_removes_an_unused_base(server, raw_image, instances):
    args = {"url": raw_image["url"], "instances_path": instances}
    _ok(run_module("image_cache", args))
    assert _ok(run_module("image_cache", dict(args, state="absent")))["changed"] is True
    assert _base_entries(instances) == []


def _making_an_overlay(instances: str, guest: str, base: str):
    """What guest_disk does while it makes an overlay: holds the base's lock shared, writes the overlay
    under a temporary name, then publishes it and its record. Returns (start, publish) callables and the
    final disk path; the lock is held from start until publish returns."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import file_lock
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import cache_layout

    guest_dir = os.path.join(instances, guest)
    os.makedirs(guest_dir, exist_ok=True)
    disk = os.path.join(guest_dir, "disk")
    temp = disk + ".virtfleet-tmp-1-race"
    lock = file_lock(cache_layout(instances).lock(os.path.basename(base)), 10, "the test's overlay", shared=True)

    def start():
        lock.__enter__()
        _qemu("create", "-f", "qcow2", "-b", base, "-F", "raw", temp)

    def publish():
        os.rename(temp, disk)
        with open(os.path.join(guest_dir, "disk.info.json"), "w") as handle:
            json.dump({"disk": {"format": "qcow2", "kind": "root", "base": base}}, handle)
        lock.__exit__(None, None, None)

    return start, publish, disk


@pytest.mark.parametrize("state", ["absent", "pruned"])
def test_removal_waits_for_an_overlay_being_made_and_then_keeps_the_base(server, raw_image, instances, state):
    """Issue 10 item 3: an absent or prune run while an overlay is being made on the base waits for the
    base's lock (guest_disk holds it shared) and decides under it: the new overlay uses the base."""
    cached = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances}))
    start, publish, disk = _making_an_overlay(instances, "race1", cached["path"])
    args = {"state": state, "instances_path": instances, "lock_timeout": 60}
    if state == "absent":
        args["url"] = raw_image["url"]
    else:
        args["min_unused_age"] = "0"
    start()
    with ThreadPoolExecutor(max_workers=1) as pool:
        removal = pool.submit(run_module, "image_cache", args)
        time.sleep(2)
        assert not removal.done(), removal.result()  # it waits for the lock ...
        assert os.path.exists(cached["path"])
        publish()
        result = removal.result(timeout=60)
    assert os.path.exists(cached["path"]) and os.path.exists(cached["path"] + ".info.json")
    if state == "absent":  # ... and refuses, naming the overlay made meanwhile
        assert disk in _failed(result) and "still used" in result["msg"]
    else:
        assert _ok(result)["removed"] == [] and result["kept"] == [cached["path"]]
    assert _info(disk, "qcow2")["backing-filename"] == cached["path"]


def test_removal_gives_up_on_a_lock_held_too_long(server, raw_image, instances):
    cached = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances}))
    start, publish, _disk = _making_an_overlay(instances, "race2", cached["path"])
    start()
    try:
        msg = _failed(run_module("image_cache", {"url": raw_image["url"], "state": "absent",
                                                 "instances_path": instances, "lock_timeout": 1}))
    finally:
        publish()
    assert "timed out" in msg and "lock" in msg and os.path.exists(cached["path"])


_DOMAIN = """<domain type='qemu'><name>%(name)s</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%(disk)s'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


@pytest.mark.parametrize("where", ["outside", "lock_dir"])
def test_a_defined_domain_keeps_its_base_wherever_its_disk_lives(sandbox, server, raw_image, where):
    """Issue 10 item 4: the in-use check asks libvirt, not only the instances tree. A domain whose disk is
    an overlay outside the tree (an instance_dir elsewhere), or inside the cache's own lock directory
    (where a guest named ``locks`` put its disks), keeps the base from absent and pruned."""
    instances = sandbox.instances
    cached = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances}))
    directory = os.path.join(sandbox.root, "elsewhere") if where == "outside" else os.path.join(instances, "locks")
    os.makedirs(directory, exist_ok=True)
    disk = os.path.join(directory, "disk.qcow2")
    _qemu("create", "-f", "qcow2", "-b", cached["path"], "-F", "raw", disk)
    name = sandbox.guest_name("inuse")
    sandbox.conn.defineXML(_DOMAIN % {"name": name, "disk": disk})
    msg = _failed(run_module("image_cache", {"url": raw_image["url"], "state": "absent",
                                             "instances_path": instances}))
    assert "still used by domain %s" % name in msg and os.path.exists(cached["path"])
    pruned = _ok(run_module("image_cache", {"state": "pruned", "instances_path": instances,
                                            "min_unused_age": "0"}))
    assert pruned["removed"] == [] and pruned["kept"] == [cached["path"]]
    destroy_domains(sandbox.conn, [name])
    removed = _ok(run_module("image_cache", {"url": raw_image["url"], "state": "absent",
                                             "instances_path": instances}))
    assert removed["changed"] and not os.path.exists(cached["path"])


def test_a_guest_cannot_be_named_after_the_layouts_own_directories(sandbox):
    """The other half of item 4: no guest can put its disks into the cache's lock (or base) directory."""
    for name in ("locks", "_base"):
        msg = _failed(run_module("guest_disk", {"guest": name, "kind": "blank", "size": "1M",
                                                "instances_path": sandbox.instances}))
        assert "invalid guest name %r" % name in msg
    assert not os.path.exists(os.path.join(sandbox.instances, "locks", "disk.blank"))


def _age(path: str, seconds: float) -> None:
    old = time.time() - seconds
    for target in (path, path + ".info.json"):
        os.utime(target, (old, old))


def test_pruned_keeps_used_and_recent_bases_and_removes_old_unused_ones(server, raw_image, qcow2_image,
                                                                        tmp_path, instances):
    used_root = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances}))
    used_eph = _ok(run_module("image_cache", {"url": qcow2_image["url"], "instances_path": instances,
                                              "cache_format": "qcow2"}))
    old = _ok(run_module("image_cache", {"url": raw_image["url"], "instances_path": instances,
                                         "cache_format": "qcow2"}))
    recent = _ok(run_module("image_cache", {"url": qcow2_image["url"], "instances_path": instances}))
    _overlay(instances, "web1", used_root["path"], "raw")
    _overlay(instances, "web2", used_eph["path"], "qcow2", file_name="disk.local")
    for result in (used_root, used_eph, old):
        _age(result["path"], 3 * 86400)
    check = _ok(run_module("image_cache", {"state": "pruned", "instances_path": instances}, check=True))
    assert check["removed"] == [old["path"]] and os.path.exists(old["path"])
    pruned = _ok(run_module("image_cache", {"state": "pruned", "instances_path": instances}))
    assert pruned["changed"] and pruned["removed"] == [old["path"]]
    assert sorted(pruned["kept"]) == sorted([used_root["path"], used_eph["path"], recent["path"]])
    assert not os.path.exists(old["path"]) and not os.path.exists(old["path"] + ".info.json")
    for result in (used_root, used_eph, recent):
        assert os.path.exists(result["path"])
    again = _ok(run_module("image_cache", {"state": "pruned", "instances_path": instances}))
    assert again["changed"] is False
    quick = _ok(run_module("image_cache", {"state": "pruned", "instances_path": instances, "min_unused_age": "0"}))
    assert quick["removed"] == [recent["path"]]


# ---- TLS ------------------------------------------------------------------------------------------------

def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def tls_files(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path / "pki"
    d.mkdir()
    p = {name: str(d / name) for name in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem", "cli.key",
                                          "cli.csr", "cli.pem", "ext.cnf")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=virtfleet test CA",
             "-keyout", p["ca.key"], "-out", p["ca.pem"])
    with open(p["ext.cnf"], "w") as handle:
        handle.write("subjectAltName=IP:127.0.0.1\n")
    for who, cn in (("srv", "127.0.0.1"), ("cli", "virtfleet client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn, "-keyout", p[who + ".key"],
                 "-out", p[who + ".csr"])
        _openssl("x509", "-req", "-in", p[who + ".csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"],
                 "-CAcreateserial", "-days", "2", "-out", p[who + ".pem"], "-extfile", p["ext.cnf"])
    return p


def _serve_tls(server, tls_files, require_client_cert: bool) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files["srv.pem"], tls_files["srv.key"])
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(tls_files["ca.pem"])
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)


def _https(url: str) -> str:
    return url.replace("http://", "https://")


def test_https_certificate_validation(server, raw_image, instances, tls_files):
    _serve_tls(server, tls_files, require_client_cert=False)
    url = _https(raw_image["url"])
    msg = _failed(run_module("image_cache", {"url": url, "instances_path": instances, "retries": 0}))
    assert "certificate" in msg.lower() and url in msg
    assert _base_entries(instances) == []
    result = _ok(run_module("image_cache", {"url": url, "instances_path": instances, "validate_certs": False,
                                            "checksum": "sha256:" + raw_image["sha256"]}))
    assert _sha256(result["path"]) == raw_image["sha256"]


def test_https_client_certificate(server, raw_image, instances, tls_files):
    _serve_tls(server, tls_files, require_client_cert=True)
    url = _https(raw_image["url"])
    without = run_module("image_cache", {"url": url, "instances_path": instances, "validate_certs": False,
                                         "retries": 0, "timeout": 5})
    assert url in _failed(without)
    assert _base_entries(instances) == []
    result = _ok(run_module("image_cache", {"url": url, "instances_path": instances, "validate_certs": False,
                                            "client_cert": tls_files["cli.pem"], "client_key": tls_files["cli.key"],
                                            "checksum": "sha256:" + raw_image["sha256"]}))
    assert _sha256(result["path"]) == raw_image["sha256"]


# ---- zstd ------------------------------------------------------------------------------------------------

def test_zstd_images_are_decompressed(server, raw_image, instances):
    import zstandard  # pinned in requirements.txt: this path must run, not be skipped

    with open(raw_image["path"], "rb") as handle:
        packed = zstandard.ZstdCompressor(level=3).compress(handle.read())
    with open(os.path.join(server.root, "disk.zst"), "wb") as handle:
        handle.write(packed)
    # The checksum is the published file's (compressed), as in a SHA256SUMS next to it.
    checksum = "sha256:" + hashlib.sha256(packed).hexdigest()
    result = _ok(run_module("image_cache", {"url": server.url("disk.zst"), "instances_path": instances,
                                            "checksum": checksum}))
    assert result["compression"] == "zstd" and result["format"] == "raw"
    assert _sha256(result["path"]) == raw_image["sha256"]
    again = _ok(run_module("image_cache", {"url": server.url("disk.zst"), "instances_path": instances,
                                           "checksum": checksum}))
    assert again["changed"] is False and again["path"] == result["path"]


def test_zstd_without_the_zstandard_module_says_what_to_install(server, raw_image, instances, tmp_path):
    """A hypervisor without python zstandard (shadowed here by a stub that fails to import)."""
    import zstandard

    stub = tmp_path / "no-zstandard"
    stub.mkdir()
    (stub / "zstandard.py").write_text("raise ImportError('zstandard is not installed here')\n")
    with open(raw_image["path"], "rb") as handle:
        packed = zstandard.ZstdCompressor().compress(handle.read())
    with open(os.path.join(server.root, "disk2.zst"), "wb") as handle:
        handle.write(packed)
    msg = _failed(run_module("image_cache", {"url": server.url("disk2.zst"), "instances_path": instances},
                             pythonpath_first=str(stub)))
    assert "zstd" in msg and "zstandard" in msg
    assert _base_entries(instances) == []  # nothing half-written is left in the cache


# ---- many playbooks at once -------------------------------------------------------------------------------

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - name: Cache the image
      virtfleet.libvirt.image_cache:
        url: "{{ image_url }}"
        checksum: "{{ image_checksum }}"
        instances_path: "{{ instances }}"
        cache_format: qcow2
      register: image
    - name: Check the result
      ansible.builtin.assert:
        that:
          - image.format == 'qcow2'
          - image.virtual_size == 4194304
"""


def test_eight_concurrent_playbooks_download_once(server, raw_image, instances, tmp_path):
    playbook = tmp_path / "cache.yml"
    playbook.write_text(PLAYBOOK)
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % PYTHON)
    extra = {"image_url": raw_image["url"], "image_checksum": "sha256:" + raw_image["sha256"],
             "instances": instances}
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(lambda _: run_playbook(str(playbook), str(inventory), extra_vars=extra), range(8)))
    for run in runs:
        assert run.rc == 0 and run.failed() == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert server.httpd.gets == ["disk.raw"]
    assert sum(run.changed() for run in runs) == 1
    assert len(_base_entries(instances)) == 2


def test_pruned_reads_unrecorded_disks_by_their_header_and_keeps_ephemeral_bases(qemu_img_host, instances):
    base_dir = os.path.join(instances, "_base")
    os.makedirs(base_dir)
    used_eph = os.path.join(base_dir, "ephemeral_1_default")
    unused_swap = os.path.join(base_dir, "swap_512")
    for path in (used_eph, unused_swap):
        _qemu("create", "-f", "raw", path, "1M")
        os.utime(path, (0, 0))  # no record: its own times say when it was last used
    guest_dir = os.path.join(instances, "web9")
    os.makedirs(guest_dir)
    # no disk.info.json: the chain is read from the qcow2 header (relative backing name), not by qemu-img
    _qemu("create", "-f", "qcow2", "-b", "../_base/ephemeral_1_default", "-F", "raw",
          os.path.join(guest_dir, "disk.eph"))
    pruned = _ok(run_module("image_cache", {"state": "pruned", "instances_path": instances}))
    assert pruned["removed"] == [unused_swap] and pruned["kept"] == [used_eph]
    assert os.path.exists(used_eph) and not os.path.exists(unused_swap)


# ---- the list form -----------------------------------------------------------------------------------

def test_the_list_form_fetches_each_image_once_and_a_bad_one_fails_alone(tmp_path, server, instances):
    raw = _raw_image(str(tmp_path / "www" / "a.raw"))
    _qcow2_from(_raw_image(str(tmp_path / "b.raw")), str(tmp_path / "www" / "b.qcow2"))
    items = [{"url": server.url("a.raw"), "checksum": "sha256:" + _sha256(raw)},
             {"url": server.url("b.qcow2"), "format": "qcow2"},
             {"url": server.url("a.raw"), "checksum": "sha256:" + _sha256(raw)},
             {"url": server.url("missing.raw")}]
    args = {"instances_path": instances, "items": items, "retries": 0}
    predicted = run_module("image_cache", args, check=True)
    assert [r["actions"] for r in predicted["results"][:2]] == [["fetch"], ["fetch", "convert"]]
    assert not os.path.exists(instances)
    result = run_module("image_cache", args)
    assert result["_rc"] != 0 and result["msg"].startswith("1 of 4 items failed: %s: cannot fetch"
                                                           % server.url("missing.raw"))
    fetched = [r["fetched"] for r in result["results"][:3]]
    assert sorted(fetched) == [False, True, True]  # a.raw once, whichever of its two items ran first
    assert result["results"][0]["path"] == result["results"][2]["path"]
    assert [g for g in server.httpd.gets if g.endswith("a.raw")] == ["a.raw"]
    assert len(_base_entries(instances)) == 4  # two images and their records
    again = run_module("image_cache", dict(args, items=items[:3]))
    assert again["_rc"] == 0 and again["changed"] is False
