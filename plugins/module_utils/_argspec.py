# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: argument-spec objects that compose (the pattern of community.crypto).

Each core declares its per-item options once, as an ``ArgumentSpec`` next to the code that validates
them, with its choice lists taken from the core's own constants. A module's spec is the shared
options (``CONNECTION``, ``INSTANCES``) merged with its core's item spec; a list form of a module can
reuse the same item spec as the ``options`` of its list (``as_list_option``), so validation and docs
stay one.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import DEFAULT_INSTANCES_PATH

DEFAULT_URI = "qemu:///system"
_CONSTRAINTS = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")


class ArgumentSpec:
    """An argument spec plus its constraints between options."""

    def __init__(self, argument_spec: Optional[Dict[str, Dict[str, Any]]] = None,
                 mutually_exclusive: Optional[List[Sequence[str]]] = None,
                 required_together: Optional[List[Sequence[str]]] = None,
                 required_one_of: Optional[List[Sequence[str]]] = None,
                 required_if: Optional[List[Sequence[Any]]] = None,
                 required_by: Optional[Dict[str, Sequence[str]]] = None) -> None:
        self.argument_spec: Dict[str, Dict[str, Any]] = copy.deepcopy(argument_spec or {})
        self.mutually_exclusive = list(mutually_exclusive or [])
        self.required_together = list(required_together or [])
        self.required_one_of = list(required_one_of or [])
        self.required_if = list(required_if or [])
        self.required_by = dict(required_by or {})

    def merge(self, *others: "ArgumentSpec") -> "ArgumentSpec":
        """A new spec holding this one's options and constraints and the others'; an option may not be
        defined twice with different specs."""
        merged = ArgumentSpec(self.argument_spec, self.mutually_exclusive, self.required_together,
                              self.required_one_of, self.required_if, self.required_by)
        for other in others:
            for name, option in other.argument_spec.items():
                if name in merged.argument_spec and merged.argument_spec[name] != option:
                    raise ValueError("option %r defined twice with different specs" % name)
                merged.argument_spec[name] = copy.deepcopy(option)
            merged.mutually_exclusive += other.mutually_exclusive
            merged.required_together += other.required_together
            merged.required_one_of += other.required_one_of
            merged.required_if += other.required_if
            merged.required_by.update(other.required_by)
        return merged

    def constraints(self) -> Dict[str, Any]:
        """The constraint keyword arguments, as AnsibleModule and a list option's dict take them."""
        return {key: copy.deepcopy(getattr(self, key)) for key in _CONSTRAINTS if getattr(self, key)}

    def as_list_option(self, required: bool = False) -> Dict[str, Any]:
        """This spec as the ``options`` of a list of dicts (the list form of a module)."""
        option: Dict[str, Any] = {"type": "list", "elements": "dict", "options": copy.deepcopy(self.argument_spec)}
        option.update(self.constraints())
        if required:
            option["required"] = True
        return option

    def defaults(self) -> Dict[str, Any]:
        """The documented default of every option (None when it has none)."""
        return {name: copy.deepcopy(option.get("default")) for name, option in self.argument_spec.items()}

    def create_ansible_module(self, **kwargs: Any):
        """An AnsibleModule for this spec; check mode is supported for real by every module of ours."""
        from ansible.module_utils.basic import AnsibleModule

        kwargs.setdefault("supports_check_mode", True)
        return AnsibleModule(argument_spec=copy.deepcopy(self.argument_spec), **dict(self.constraints(), **kwargs))


# Options shared by modules that talk to libvirt (doc fragment virtfleet.libvirt.common.connection).
CONNECTION = ArgumentSpec({"uri": {"type": "str", "default": DEFAULT_URI}})
# Options shared by modules that work in the instances tree (doc fragment virtfleet.libvirt.common.instances).
INSTANCES = ArgumentSpec({"instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH}})
