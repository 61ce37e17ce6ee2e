# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the libvirt connection and the text of libvirt's errors.

libvirt-python is imported here only; modules call ``require_libvirt`` so that a missing
binding ends in Ansible's usual "missing required library" message, not an ImportError.
Everything done with a connection goes through ``_host.guest`` (``Hypervisor``, ``Guest``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import traceback
from typing import Iterator, Optional

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


_ERROR_LOG = re.compile(r"Check error log '(/[^']+)'")
_SWTPM_HINT = ("The vTPM emulator swtpm could not set up the guest's TPM state. swtpm runs as the "
               "swtpm_user of /etc/libvirt/qemu.conf (default tss), which needs write access to "
               "/var/lib/swtpm-localca and everything in it (chown -R tss /var/lib/swtpm-localca), "
               "or the guest can be defined without tpm.")


_NO_PASST = "Invalid value for attribute 'type' in element 'backend'"
_NO_PASST_HINT = ("This libvirt cannot run the passt backend of a user-mode NIC (Debian 12's libvirt 9.0.0 refuses "
                  "<backend type='passt'/> although its schema lists it), so it cannot forward ports to the guest. "
                  "Use nics[].backend qemu (the default, QEMU's own user networking), a libvirt that supports passt "
                  "(and install the passt package), or a network, bridge or direct NIC instead of type user.")
# QEMU's words when a user NIC's hostfwd cannot listen (the address:port is taken, or not on this host).
_HOSTFWD_FAILED = "Could not set up host forwarding rule"
_HOSTFWD_HINT = ("A host port of a user NIC's port_forwards is in use on the host (another guest or service listens "
                 "on it) or its address is not one of the host's: give nics[].port_forwards[].host_port a free port "
                 "(ss -ltn lists the ones in use), write the definition again with domain_xml, and start the guest.")


def explain_libvirt_failure(text: str, log_lines: int = 4) -> str:
    """``text`` with what an operator needs to act on when libvirt only points at a helper's log.

    libvirt reports a failed swtpm_setup as "Check error log '<path>'": the cause is inside that
    log, so its last lines are quoted, and the usual fix is named.
    """
    if _NO_PASST in text:
        return text + " " + _NO_PASST_HINT
    if _HOSTFWD_FAILED in text:
        return text + " " + _HOSTFWD_HINT
    found = _ERROR_LOG.search(text)
    if found is None:
        return text
    try:
        with open(found.group(1), "r", encoding="utf-8", errors="replace") as log:
            tail = [line.strip() for line in log.readlines()[-40:] if line.strip()]
    except OSError:
        tail = []
    # The invocation lines repeat long key material; the lines after them hold the reason.
    reasons = [line for line in tail if not line.startswith(("Invoking ", "Starting ", "Ending "))]
    if reasons:
        text += " The log ends: " + " | ".join(reasons[-log_lines:])
    if "swtpm" in text:
        text += " " + _SWTPM_HINT
    return text


def open_connection(uri: str) -> "libvirt.virConnect":
    """An open connection to ``uri`` (the caller closes it), or a message saying what to check."""
    if libvirt is None:
        raise VirtfleetError(missing_required_lib("libvirt-python"))
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise VirtfleetError(
            "cannot connect to libvirt at %s: %s. Is libvirtd running on the hypervisor, and may this user "
            "use it (root or the libvirt group)?" % (uri, libvirt_error_text(exc)))


@contextlib.contextmanager
def connect(uri: str) -> Iterator["libvirt.virConnect"]:
    """An open connection to ``uri``, closed afterwards."""
    conn = open_connection(uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def agent_command(dom: "libvirt.virDomain", command: str, timeout: int) -> str:
    """A QEMU guest agent command through libvirt (libvirt_qemu, the binding's QEMU-specific half); its JSON answer.

    Imported on first use: only the guest agent ping needs it.
    """
    import libvirt_qemu  # pylint: disable=import-outside-toplevel

    return libvirt_qemu.qemuAgentCommand(dom, command, timeout, 0)
