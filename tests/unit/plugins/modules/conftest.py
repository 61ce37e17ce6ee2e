"""The sandbox every module test of this directory runs its examples in (see tests/support/module_fuzz.py)."""

from __future__ import annotations

import pytest

from tests.support.module_fuzz import Sandbox


@pytest.fixture
def sandbox(tmp_path):
    return Sandbox(str(tmp_path))
