import os
import stat

import pytest

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
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("download cut off")
    assert target.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if TEMP_MARKER in p.name]


def test_atomic_output_requires_the_file_to_be_written(tmp_path):
    with pytest.raises(FileNotFoundError):
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
