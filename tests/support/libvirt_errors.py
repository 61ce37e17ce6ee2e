"""libvirt errors for fakes that carry the message and code they are given.

libvirt.libvirtError(msg) ignores msg whenever libvirt has a thread-local last error (from any earlier real
call in the same process, e.g. "Domain not found" from another test) and takes that error's text and code
instead. Fakes build their errors here so what they raise does not depend on which tests ran before.
"""

from __future__ import annotations

import libvirt


def libvirt_error(message: str, code: int = libvirt.VIR_ERR_INTERNAL_ERROR) -> libvirt.libvirtError:
    """A libvirtError whose str(), get_error_message() and get_error_code() are ``message`` and ``code``."""
    libvirt.virResetLastError()
    exc = libvirt.libvirtError(message)
    # The raw tuple virGetLastError returns: code, domain, message, level, str1..str3, int1, int2.
    exc.err = (code, libvirt.VIR_FROM_NONE, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc
