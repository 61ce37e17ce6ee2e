"""Fixtures shared by the image inspector's tests."""

import os

import pytest


@pytest.fixture
def bytes_read(monkeypatch):
    """The sizes of every os.pread from here on: the inspector must read headers only, never data."""
    sizes = []
    real_pread = os.pread

    def counting_pread(fd, length, offset):
        data = real_pread(fd, length, offset)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting_pread)
    return sizes
