# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the libvirt connection a batch of items shares, opened on first use.

A list-form module call opens at most one connection for all its items, and none at all when no item needs
libvirt (an unchanged re-run of disks): libvirt-python is imported only then.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Set


class SharedHypervisor:
    """Stands in for a ``_host.guest.Hypervisor``; safe to use from the batch's threads."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._lock = threading.Lock()
        self._conn = None
        self._hypervisor: Optional[Any] = None
        self._in_use: Optional[Dict[str, Set[str]]] = None
        self._answers: Dict[tuple, Any] = {}

    def _opened(self) -> Any:
        with self._lock:
            if self._hypervisor is None:
                from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.guest import Hypervisor
                from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import (
                    open_connection,
                )

                self._conn = open_connection(self._uri)
                self._hypervisor = Hypervisor(self._conn)
            return self._hypervisor

    def disks_in_use(self, except_guest: Optional[str] = None) -> Dict[str, Set[str]]:
        """``Hypervisor.disks_in_use``, scanned once per batch (a batch defines no other guest's disks, and a
        scan that is older errs on the side of keeping a file)."""
        hypervisor = self._opened()
        with self._lock:
            if self._in_use is None:
                self._in_use = hypervisor.disks_in_use()
            scan = self._in_use
        return {path: users - {except_guest} for path, users in scan.items() if users - {except_guest}}

    def capabilities(self) -> str:
        """The host's capabilities, read once per batch (every item's virt-type probe asks the same)."""
        return self._cached(("capabilities",), lambda h: h.capabilities())

    def domain_capabilities(self, machine: str, virt_type: str, arch: str = "x86_64") -> str:
        return self._cached(("domcaps", machine, virt_type, arch), lambda h: h.domain_capabilities(machine, virt_type,
                                                                                                   arch))

    def lib_version(self) -> int:
        return self._cached(("version",), lambda h: h.lib_version())

    def _cached(self, key: tuple, read: Callable[[Any], Any]) -> Any:
        hypervisor = self._opened()
        with self._lock:
            if key in self._answers:
                return self._answers[key]
        value = read(hypervisor)
        with self._lock:
            return self._answers.setdefault(key, value)

    def guests_using(self, path: str, except_guest: Optional[str] = None) -> List[str]:
        return sorted(self.disks_in_use(except_guest).get(os.path.realpath(path), set()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._opened(), name)

    @property
    def opened(self) -> bool:
        return self._hypervisor is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
            self._conn = self._hypervisor = None


def list_form(single: Callable[..., Dict[str, Any]], item: Any, key: str,
              serial: Optional[Callable[[Dict[str, Any]], Any]] = None,
              describe: Optional[Callable[[Dict[str, Any]], str]] = None) -> Callable[..., Dict[str, Any]]:
    """A module's core with its list form: ``single(params, check_mode, diff, hypervisor=...)`` for one item,
    or for each element of ``items`` (see ``_batch.run_items``), all of them sharing one ``SharedHypervisor``
    (one connection, one host-facts probe, one scan of disks in use)."""
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import DEFAULT_URI
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._batch import ITEMS, run_items

    def core(params: Mapping[str, Any], check_mode: bool = False, diff: bool = False) -> Dict[str, Any]:
        if params.get(ITEMS) is None:
            return single(params, check_mode, diff)
        shared = SharedHypervisor(params.get("uri") or DEFAULT_URI)
        try:
            return run_items(dict(params), item, key, lambda one: single(one, check_mode, diff, hypervisor=shared),
                             diff, serial=serial, describe=describe)
        finally:
            shared.close()

    return core
