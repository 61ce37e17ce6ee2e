import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.virtfleet.libvirt.plugins.module_utils import _fileutil as fileutil
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import (
    TEMP_MARKER, atomic_output, read_bytes, write_file_atomic,
)


def test_write_file_atomic_sets_mode_and_content(tmp_path):
    target = tmp_path / "secret.json"
    write_file_atomic(str(target), b"token", 0o600)
    assert target.read_bytes() == b"token"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.json"]


def test_atomic_output_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "disk"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="^download cut off$"):
        with atomic_output(str(target)) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("download cut off")
    assert target.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]


def test_atomic_output_requires_the_file_to_be_written(tmp_path):
    with pytest.raises(FileNotFoundError, match="to be written"):
        with atomic_output(str(tmp_path / "x")):
            pass
    assert list(tmp_path.iterdir()) == []


def test_read_bytes_missing_is_none(tmp_path):
    assert read_bytes(str(tmp_path / "nope")) is None
    write_file_atomic(str(tmp_path / "a"), b"1")
    assert read_bytes(str(tmp_path / "a")) == b"1"
    assert os.path.exists(tmp_path / "a")


def test_copy_sparse_keeps_holes_mode_and_content(tmp_path):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import allocated_bytes, copy_sparse

    src, dst = str(tmp_path / "disk"), str(tmp_path / "backup")
    with open(src, "wb") as handle:
        handle.truncate(64 << 20)
        handle.seek(40 << 20)
        handle.write(b"x" * 100000)
    seen = []
    copy_sparse(src, dst, 0o600, after_chunk=seen.append)
    with open(src, "rb") as one, open(dst, "rb") as two:
        assert one.read() == two.read()
    assert os.stat(dst).st_mode & 0o777 == 0o600 and allocated_bytes(dst) < 1 << 20
    assert not seen or seen[-1] == 100000 or seen[-1] >= 100000


def test_copy_sparse_leaves_nothing_when_it_fails(tmp_path):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import copy_sparse

    src, dst = str(tmp_path / "disk"), str(tmp_path / "backup")
    with open(src, "wb") as handle:
        handle.write(b"y" * (3 << 20))

    def full(_copied):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        copy_sparse(src, dst, 0o600, after_chunk=full)
    assert os.listdir(str(tmp_path)) == ["disk"]


# --- issue 10 item 21: a publish is atomic, and the tests would notice if it were not ----------------------------

_WRITE_UNDER_A_FILE_SIZE_LIMIT = r"""
import resource, signal, sys
sys.path[:0] = sys.argv[3:]
from ansible_collections.virtfleet.libvirt.plugins.module_utils._fileutil import write_file_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
try:
    write_file_atomic(sys.argv[1], b"N" * (4 << 20))
except OSError as exc:
    print(exc.errno)
"""


def _write_cut_off_midway(path, limit):
    """Run write_file_atomic(path, 4 MiB) in a child whose files cannot grow past ``limit`` bytes."""
    proc = subprocess.run([sys.executable, "-c", _WRITE_UNDER_A_FILE_SIZE_LIMIT, str(path), str(limit)] + sys.path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_write_cut_off_midway_leaves_the_old_file_whole_and_no_temp(tmp_path):
    target = tmp_path / "domain.xml"
    target.write_bytes(b"old")
    assert _write_cut_off_midway(target, 1 << 20) == "27"  # EFBIG after the first MiB
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["domain.xml"]


def test_a_write_cut_off_midway_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "disk.config"
    assert _write_cut_off_midway(target, 1 << 20) == "27"
    assert list(tmp_path.iterdir()) == []


def test_the_final_name_holds_the_old_content_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "base"
    target.write_bytes(b"old")
    seen = []
    with atomic_output(str(target), 0o640) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and TEMP_MARKER in os.path.basename(tmp)
        with open(tmp, "wb") as handle:
            for _chunk in range(4):
                handle.write(b"n" * 1000)
                handle.flush()
                seen.append(target.read_bytes())
    assert seen == [b"old"] * 4
    assert target.read_bytes() == b"n" * 4000
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_content_is_synced_before_it_is_published_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_file_atomic(str(tmp_path / "rec.json"), b"{}")
    file_inode, dir_inode = os.stat(tmp_path / "rec.json").st_ino, os.stat(tmp_path).st_ino
    assert events == [("fsync", file_inode), ("replace", file_inode), ("fsync", dir_inode)]


def test_secret_bytes_never_land_in_a_file_others_can_read(tmp_path, monkeypatch):
    """The temporary file has its mode before the first byte is written, whatever the umask."""
    modes = []
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    old_umask = os.umask(0)
    try:
        write_file_atomic(str(tmp_path / "user_data"), b"secret", 0o600)
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert stat.S_IMODE((tmp_path / "user_data").stat().st_mode) == 0o600


def test_the_default_mode_is_0644(tmp_path):
    old_umask = os.umask(0)
    try:
        write_file_atomic(str(tmp_path / "a"), b"1")
        with atomic_output(str(tmp_path / "b")) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"2")
    finally:
        os.umask(old_umask)
    assert [stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a", "b")] == [0o644, 0o644]


def test_atomic_output_says_which_file_was_not_written(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^expected .*/x\.virtfleet-tmp-\d+-[0-9a-f]{8} to be written$"):
        with atomic_output(str(tmp_path / "x")):
            pass


def test_an_interrupted_publish_removes_its_temp_file(tmp_path):
    with pytest.raises(KeyboardInterrupt, match="^$"):
        with atomic_output(str(tmp_path / "x")) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half")
            raise KeyboardInterrupt()
    assert list(tmp_path.iterdir()) == []


def test_temp_names_are_siblings_unique_to_the_process(tmp_path):
    names = {fileutil.temp_path_for(str(tmp_path / "disk")) for _attempt in range(50)}
    assert len(names) == 50
    for name in names:
        assert os.path.dirname(name) == str(tmp_path)
        assert os.path.basename(name).startswith("disk%s%d-" % (TEMP_MARKER, os.getpid()))


def test_remove_quietly(tmp_path):
    fileutil.remove_quietly(None)
    fileutil.remove_quietly("")
    fileutil.remove_quietly(str(tmp_path / "missing"))
    (tmp_path / "x").write_text("x")
    fileutil.remove_quietly(str(tmp_path / "x"))
    assert list(tmp_path.iterdir()) == []


def test_fsync_helpers_refuse_what_is_not_there(tmp_path):
    fileutil.fsync_dir(str(tmp_path))
    (tmp_path / "f").write_text("x")
    fileutil.fsync_file(str(tmp_path / "f"))
    with pytest.raises(NotADirectoryError, match="Not a directory"):
        fileutil.fsync_dir(str(tmp_path / "f"))
    with pytest.raises(FileNotFoundError, match="No such file"):
        fileutil.fsync_file(str(tmp_path / "missing"))


# --- locks -----------------------------------------------------------------------------------------------------

def test_an_exclusive_lock_excludes_and_says_who_waits_for_what(tmp_path):
    lock = str(tmp_path / "locks" / "base.lock")
    with fileutil.exclusive_lock(lock, 5, "the base"):
        assert stat.S_IMODE(os.stat(tmp_path / "locks").st_mode) & 0o755 == 0o755
        started = time.monotonic()
        expected = ("timed out after 1 s waiting for the lock %s held by another run working on the cached base abc; "
                    "run it again when that run is done" % lock)
        with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
            with fileutil.file_lock(lock, 1, "the cached base abc", "run it again when that run is done"):
                pass
        assert time.monotonic() - started >= 1
        expected = ("timed out after 0 s waiting for the lock %s held by another run working on "
                    "guest web1" % lock)
        with pytest.raises(VirtfleetError, match="^%s$" % re.escape(expected)):
            with fileutil.file_lock(lock, 0, "guest web1", shared=True):
                pass
    with fileutil.exclusive_lock(lock, 0, "the base"):  # released when the holder is done
        pass


def test_shared_locks_coexist_and_keep_the_exclusive_one_out(tmp_path):
    lock = str(tmp_path / "base.lock")
    with fileutil.file_lock(lock, 0, "the base", shared=True):
        with fileutil.file_lock(lock, 0, "the base", shared=True):
            with pytest.raises(VirtfleetError, match="^timed out after 0 s"):
                with fileutil.exclusive_lock(lock, 0.3, "the base"):
                    pass
    with fileutil.exclusive_lock(lock, 0, "the base"):
        with pytest.raises(VirtfleetError, match="^timed out after 0 s"):
            with fileutil.file_lock(lock, 0, "the base", shared=True):
                pass


def test_a_lock_waits_until_the_holder_lets_go(tmp_path):
    lock = str(tmp_path / "base.lock")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('held', flush=True)\ntime.sleep(0.6)\n", lock], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with fileutil.exclusive_lock(lock, 10, "the base"):
            waited = time.monotonic() - started
    finally:
        holder.wait(timeout=10)
    assert 0.3 < waited < 3  # it waited for the holder, polling often enough to notice soon after


def test_a_child_started_under_the_lock_does_not_keep_it(tmp_path):
    """qemu-img run under a lock must not inherit it (the lock would outlive the module)."""
    lock = str(tmp_path / "base.lock")
    with fileutil.exclusive_lock(lock, 0, "the base"):
        child = subprocess.Popen(["sleep", "5"], close_fds=False)
    try:
        with fileutil.exclusive_lock(lock, 0, "the base"):
            pass
    finally:
        child.kill()
        child.wait()


# --- records ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,expected", [
    (None, None), (b"", None), (b"{not json", None), (b"[1, 2]", None), (b'"text"', None), (b"\xff\xfe{}", None),
    (b'{"format": "qcow2", "size": 1}', {"format": "qcow2", "size": 1}), (b"{}", {}),
    ('{"name": "caf\u00e9"}'.encode("utf-8"), {"name": "caf\u00e9"}),
])
def test_read_json_record(tmp_path, content, expected):
    path = tmp_path / "rec.json"
    if content is not None:
        path.write_bytes(content)
    assert fileutil.read_json_record(str(path)) == expected


def test_write_then_read_a_record(tmp_path):
    record = {"a": [1, 2], "b": None}
    write_file_atomic(str(tmp_path / "r.json"), json.dumps(record).encode())
    assert fileutil.read_json_record(str(tmp_path / "r.json")) == record


def test_exclusive_lock_without_advice_says_nothing_more(tmp_path):
    lock = str(tmp_path / "g.lock")
    with fileutil.exclusive_lock(lock, 0, "guest web1"):
        with pytest.raises(VirtfleetError, match="held by another run working on guest web1$"):
            with fileutil.exclusive_lock(lock, 0, "guest web1"):
                pass


def test_lock_files_are_0644(tmp_path):
    old_umask = os.umask(0)
    try:
        with fileutil.file_lock(str(tmp_path / "locks" / "x.lock"), 0, "x"):
            pass
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(tmp_path / "locks" / "x.lock").st_mode) == 0o644


def test_a_held_lock_is_polled_often_and_for_the_whole_timeout(tmp_path, monkeypatch):
    """The wait for a lock backs off from 10 ms to 50 ms and no further: a batch's threads wait on each other's
    locks (one image fetch for many guests), and each poll missed after a release delays a guest by that much."""
    lock = str(tmp_path / "base.lock")
    sleeps = []
    real_sleep = time.sleep

    def sleep(seconds):
        sleeps.append(seconds)
        real_sleep(seconds)

    with fileutil.exclusive_lock(lock, 0, "the base"):
        monkeypatch.setattr(time, "sleep", sleep)
        started = time.monotonic()
        with pytest.raises(VirtfleetError, match="^timed out after 2 s"):
            with fileutil.exclusive_lock(lock, 2, "the base"):
                pass
        waited = time.monotonic() - started
    assert sleeps[:4] == [0.01, 0.02, 0.04, 0.05]
    assert set(sleeps[4:]) == {0.05}
    assert waited >= 2 and sum(sleeps) < 2.1  # the whole timeout, and no sleep past its end


def test_the_wait_ends_when_the_clock_reaches_the_deadline_not_after_it(tmp_path, monkeypatch):
    """At the deadline exactly the wait is over: with a clock that stands still a timeout of 0 gives up at once
    (``>`` instead of ``>=`` would poll for ever)."""
    lock = str(tmp_path / "base.lock")
    sleeps = []
    with fileutil.exclusive_lock(lock, 0, "the base"):
        monkeypatch.setattr(time, "monotonic", lambda: 1000.0)
        monkeypatch.setattr(time, "sleep", lambda seconds: sleeps.append(seconds) or len(sleeps) < 5 or
                            pytest.fail("still polling at the deadline"))
        with pytest.raises(VirtfleetError, match="^timed out after 0 s waiting for the lock "):
            with fileutil.exclusive_lock(lock, 0, "the base"):
                pass
    assert sleeps == []


def test_fsync_dir_of_a_bare_file_name_syncs_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_file_atomic("bare.json", b"{}")
    assert (tmp_path / "bare.json").read_bytes() == b"{}"
    fileutil.fsync_dir("")
