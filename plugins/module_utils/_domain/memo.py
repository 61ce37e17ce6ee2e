# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the ``domain`` module's re-run memo, and the fast path that trusts it.

After a run that changed something has proven by the full semantic comparison (``_domain.plan``)
that libvirt's persistent definition equals the desired XML and, for a guest that runs, that the live
definition equals it too, it records a memo in the domain's libvirt metadata::

    <vfmemo:memo xmlns:vfmemo="https://virtfleet.dev/xmlns/libvirt/memo/1" key="<sha256>"/>

The key is a sha256 over the source of the code that decides the comparison, the desired XML exactly
as the module got it, libvirt's inactive XML and (for a running or paused guest) its live XML, both as
text with the memo line removed. A later run that reads the same texts and computes the same key
knows the comparison's answer (nothing to redefine, no restart pending) without parsing anything, so
it needs neither lxml nor the domain model; only state transitions and autostart remain to decide.

The memo is a cache, never a source of truth: the comparison ignores it, any other difference in
any of the texts (a ``virsh edit``, a hot-plug, another desired XML, other code, another libvirt
printing the XML differently) simply makes the key differ and the full path run. It is written only
in runs that change something anyway, so a run with nothing to do stays read-only.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Dict, Optional, Tuple

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import code_digest
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.state import (
    ACTIVE, autostart_actions, state_after, transition_actions,
)
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Guest, Hypervisor, LibvirtError

MEMO_NS = "https://virtfleet.dev/xmlns/libvirt/memo/1"
MEMO_PREFIX = "vfmemo"
MEMO_TAG = "memo"
PLACEHOLDER = "pending"
KEY_VERSION = b"virtfleet domain memo 1"
# The code whose answer the memo stands for: the comparison (plan, model, normalisation, differences),
# the lifecycle that runs it, and this file.
CODE_MODULES = ("_domain.memo", "_domain.lifecycle", "_domain.plan", "_domain.model", "_domain.normalize",
                "_domain.differences")
# Wanted states the fast path can answer (``absent`` has nothing to compare).
FAST_STATES = ("running", "paused", "defined", "shutdown")

# Exactly our element as libvirt prints it: its own line, a child of <metadata> (four blanks in).
_MEMO_LINE = re.compile(r'^    <%s:%s xmlns:%s="%s" key="([0-9a-f]{64}|%s)"/>\n' % (
    MEMO_PREFIX, MEMO_TAG, MEMO_PREFIX, re.escape(MEMO_NS), PLACEHOLDER), re.M)

# A virtio channel's connection state in the live XML flips when the guest agent starts or stops; the
# comparison ignores it, so the key must too (or a guest with an agent would never take the fast path).
_CHANNEL_STATE = re.compile(r"(<target type='virtio' name='[^'<>]*') state='(?:connected|disconnected)'")

Texts = Tuple[str, Optional[str]]  # (inactive XML, live XML or None when the guest does not run)


def code() -> Optional[str]:
    """Digest of the deciding code's source (None when unreadable: then there is no memo at all)."""
    return code_digest(CODE_MODULES)


def strip_memo(xml: str) -> str:
    """``xml`` without our memo line (any key), so a text and its memo never depend on each other."""
    return _MEMO_LINE.sub("", xml)


def memo_of(xml: str) -> Optional[str]:
    """The key recorded in ``xml``; None without exactly one finished memo."""
    found = _MEMO_LINE.findall(xml)
    if len(found) != 1 or found[0] == PLACEHOLDER:
        return None
    return found[0]


def memo_key(code_hash: str, desired: str, inactive: str, live: Optional[str]) -> str:
    """The key for these texts (the memo lines are stripped here)."""
    digest = hashlib.sha256()
    parts = (KEY_VERSION, code_hash.encode("ascii"), desired.encode("utf-8"), strip_memo(inactive).encode("utf-8"),
             b"-" if live is None else b"+" + _CHANNEL_STATE.sub(r"\1", strip_memo(live)).encode("utf-8"))
    for part in parts:
        digest.update(b"%d\n" % len(part))
        digest.update(part)
    return digest.hexdigest()


def _set(guest: Guest, value: Optional[str]) -> None:
    """Write (or, with None, remove) the memo in the persistent definition only."""
    element = None if value is None else '<%s key="%s"/>' % (MEMO_TAG, value)
    guest.set_metadata(element, None if value is None else MEMO_PREFIX, MEMO_NS)


def _read(guest: Guest, with_live: bool) -> Texts:
    return guest.inactive_xml(), guest.live_xml() if with_live else None


def _same(one: Texts, two: Texts) -> bool:
    return strip_memo(one[0]) == strip_memo(two[0]) and (one[1] is None) == (two[1] is None) and \
        (one[1] is None or strip_memo(one[1]) == strip_memo(two[1]))


def record(guest: Guest, code_hash: str, desired: str, texts: Texts,
           compare_again: Callable[[], Optional[Texts]]) -> bool:
    """Record the memo for ``texts``, which the full comparison has just found equal to ``desired``.

    Stripping must give the same text before and after the memo is written, but libvirt creates the
    ``<metadata>`` wrapper when there is none; so a memo line is put in place first (a placeholder,
    unless one is there), and when that changed more than the line (or the guest changed meanwhile),
    ``compare_again()`` runs the full comparison on the new texts (None: not equal any more). The
    final write changes the line's key only. Returns whether a valid memo is in place; a memo that
    does not read back as written is removed. Any libvirt error only means no memo.
    """
    if memo_of(texts[0]) == memo_key(code_hash, desired, *texts):
        return True  # already recorded: nothing to write
    try:
        if len(_MEMO_LINE.findall(texts[0])) != 1:
            _set(guest, PLACEHOLDER)
            now = _read(guest, texts[1] is not None)
            if not _same(now, texts):
                now = compare_again()
                if now is None:
                    _set(guest, None)
                    return False
            texts = now
        key = memo_key(code_hash, desired, *texts)
        _set(guest, key)
        written = guest.inactive_xml()
        if memo_of(written) != key or strip_memo(written) != strip_memo(texts[0]):
            _set(guest, None)  # printed otherwise than expected: it would never match
            return False
    except LibvirtError:
        try:
            _set(guest, None)
        except LibvirtError:
            pass
        return False
    return True


def fast_result(hypervisor: Hypervisor, spec) -> Optional[Dict[str, Any]]:
    """The module's result when the memo proves the definitions equal and nothing needs doing; else None.

    ``spec`` is the ``DomainSpec`` with its desired XML. None sends the caller down the full path,
    which decides (and reports errors) as always.
    """
    state, desired = spec.state, spec.xml
    if state not in FAST_STATES or not isinstance(desired, str):
        return None
    code_hash = code()
    if code_hash is None:
        return None
    try:
        guest = hypervisor.lookup(spec.name)
        if guest is None:
            return None
        before = guest.status()
        if before not in ("running", "paused", "shutoff") or transition_actions(state, before):
            return None  # something to do: the full path plans and does it (and refreshes the memo)
        if autostart_actions(spec.autostart, guest.autostart()):
            return None
        inactive = guest.inactive_xml()
        have = memo_of(inactive)
        if have is None:
            return None
        live = guest.live_xml() if before in ACTIVE else None
        if memo_key(code_hash, desired, inactive, live) != have:
            return None
        uuid = guest.uuid
    except LibvirtError:
        return None
    return settled_result(state_after(state, before), before, uuid)


def settled_result(state: str, previous_state: str, uuid: Optional[str]) -> Dict[str, Any]:
    """The result of a run that found nothing to do (the full path says the same, plus its diff)."""
    return {"changed": False, "actions": [], "state": state, "previous_state": previous_state,
            "restart_pending": False, "differences": [], "changes": [], "uuid": uuid}
