# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the libvirt connection, domain lookup, states and waits.

libvirt-python is imported here only; modules call ``require_libvirt`` so that a missing
binding ends in Ansible's usual "missing required library" message, not an ImportError.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
import traceback
from typing import Callable, Iterable, Iterator, Optional, Tuple

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError

try:
    import libvirt
except ImportError:  # pragma: no cover - exercised by ansible-test's import test
    libvirt = None
    LIBVIRT_IMPORT_ERROR: Optional[str] = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None

    def _silence(_ctx, _err):
        """libvirt prints every error on stderr by default; we report them ourselves."""

    libvirt.registerErrorHandler(_silence, None)

# virDomainState -> the names our modules use.
STATE_NAMES = {
    0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed", 7: "pmsuspended",
}
# States in which the guest is executing (a "blocked" guest is running but idle).
ACTIVE_STATES = frozenset({"running", "blocked", "paused", "pmsuspended", "shutdown"})


def require_libvirt(module) -> None:
    if libvirt is None:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=LIBVIRT_IMPORT_ERROR)


def require_libvirt_and_lxml(module) -> None:
    """Modules that read or write domain XML need lxml too (for the typed domain model)."""
    require_libvirt(module)
    # Found, not imported: a re-run that takes a fast path never pays for importing lxml.
    if importlib.util.find_spec("lxml") is None:
        module.fail_json(msg=missing_required_lib("lxml"))


def libvirt_error_text(exc: Exception) -> str:
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


@contextlib.contextmanager
def connect(uri: str) -> Iterator["libvirt.virConnect"]:
    """An open connection to ``uri``, closed afterwards."""
    if libvirt is None:
        raise VirtfleetError(missing_required_lib("libvirt-python"))
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise VirtfleetError(
            "cannot connect to libvirt at %s: %s. Is libvirtd running on the hypervisor, and may this user "
            "use it (root or the libvirt group)?" % (uri, libvirt_error_text(exc)))
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def lookup_domain(conn, name: str):
    """The domain called ``name``, or None."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise VirtfleetError("cannot look up domain %s: %s" % (name, libvirt_error_text(exc)))


def domain_state(dom) -> Tuple[str, int]:
    """(state name, libvirt reason code); a domain that vanished meanwhile is 'absent'."""
    try:
        state, reason = dom.state()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return "absent", 0
        raise
    return STATE_NAMES.get(state, "nostate"), reason


def normalized_state(dom) -> str:
    """Collapse libvirt's states to the ones a user asks for: running, paused, shutoff, absent."""
    name, _reason = domain_state(dom)
    if name in ("running", "blocked", "shutdown", "pmsuspended"):
        return "running"
    if name == "crashed":
        return "shutoff"
    return name


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` was waited for."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise VirtfleetError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(poll)


def wait_for_state(dom, wanted: Iterable[str], timeout: float, name: str) -> str:
    wanted = set(wanted)
    seen = {"state": None}

    def reached() -> bool:
        seen["state"] = normalized_state(dom)
        return seen["state"] in wanted

    try:
        wait_for(reached, timeout, "domain %s to be %s" % (name, " or ".join(sorted(wanted))))
    except VirtfleetError as exc:
        raise VirtfleetError("%s (it is %s)" % (exc.msg, seen["state"]))
    return seen["state"]
