"""Errors the fakes raise say what the fake says, whatever libvirt call failed before them in the process."""

import libvirt
import pytest

from tests.support.libvirt_errors import libvirt_error


@pytest.fixture
def stale_libvirt_error():
    """A real failed libvirt call (libvirt's in-process test driver) leaves its error as the thread's last one."""
    conn = libvirt.open("test:///default")
    with pytest.raises(libvirt.libvirtError, match="Domain not found"):
        conn.lookupByName("vft-left-over-from-an-earlier-test")
    assert libvirt.virGetLastError() is not None
    yield
    conn.close()


def test_a_fake_error_carries_its_own_message_and_code(stale_libvirt_error):
    exc = libvirt_error("operation failed: start refused", libvirt.VIR_ERR_OPERATION_FAILED)
    assert str(exc) == exc.get_error_message() == "operation failed: start refused"
    assert exc.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED


def test_without_a_code_a_fake_error_is_an_internal_error(stale_libvirt_error):
    assert libvirt_error("boom").get_error_code() == libvirt.VIR_ERR_INTERNAL_ERROR
