# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: shared module plumbing.

Every module builds its AnsibleModule here from the common options and hands a plain
function (one resource in, one result dict out) to ``run_module``, which turns our
``VirtfleetError`` into ``fail_json(msg=...)`` and anything unexpected into a clear
message instead of a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from ansible.module_utils.basic import AnsibleModule

DEFAULT_URI = "qemu:///system"
DEFAULT_INSTANCES_PATH = "/var/lib/virtfleet/instances"

# Options shared by modules that talk to libvirt (documented in doc fragment `virtfleet.libvirt.connection`).
CONNECTION_ARGS: Dict[str, Dict[str, Any]] = {
    "uri": {"type": "str", "default": DEFAULT_URI},
}

# Options shared by modules that work in the instances tree (doc fragment `virtfleet.libvirt.instances`).
INSTANCES_ARGS: Dict[str, Dict[str, Any]] = {
    "instances_path": {"type": "path", "default": DEFAULT_INSTANCES_PATH},
}


class VirtfleetError(Exception):
    """An expected failure; ``msg`` says what went wrong and what to do about it.

    ``details`` are extra JSON-serialisable keys returned with the failure.
    """

    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


_PACKAGE = __name__.rpartition(".")[0]
_code_digests: Dict[tuple, Optional[str]] = {}


def _source_of(name: str) -> bytes:
    """Source bytes of our module_util ``name`` (``_layout``, ``_domain.model``) without importing it.

    Works from a checkout and from an AnsiballZ zip (through the package's loader).
    """
    package = sys.modules[_PACKAGE]
    path = os.path.join(list(package.__path__)[0], *name.split(".")) + ".py"
    loader = getattr(package, "__loader__", None)
    if loader is not None and hasattr(loader, "get_data"):
        try:
            return loader.get_data(path)
        except OSError:
            pass
    with open(path, "rb") as handle:
        return handle.read()


def code_digest(names: Iterable[str]) -> Optional[str]:
    """sha256 over the source of the module_utils ``names``: records made by other code are not trusted.

    Reads the sources through the package's loader instead of ``importlib.util.find_spec`` (which costs
    milliseconds per name inside an AnsiballZ zip). None when a source cannot be read: no fast path then.
    """
    key = tuple(names)
    if key not in _code_digests:
        digest = hashlib.sha256()
        try:
            for name in key:
                data = _source_of(name)
                digest.update(b"%s %d\n" % (name.encode(), len(data)))
                digest.update(data)
            _code_digests[key] = digest.hexdigest()
        except Exception:  # pylint: disable=broad-except
            # no source to hash: no fast path
            _code_digests[key] = None
    return _code_digests[key]


def merge_specs(*specs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Compose argument specs; a later spec may not silently redefine an option."""
    merged: Dict[str, Dict[str, Any]] = {}
    for spec in specs:
        for name, option in spec.items():
            if name in merged and merged[name] != option:
                raise ValueError("option %r defined twice with different specs" % name)
            merged[name] = dict(option)
    return merged


def build_module(argument_spec: Dict[str, Dict[str, Any]], **kwargs: Any) -> AnsibleModule:
    """AnsibleModule with check mode on by default: every module of ours supports it for real."""
    kwargs.setdefault("supports_check_mode", True)
    return AnsibleModule(argument_spec=argument_spec, **kwargs)


WARNINGS_KEY = "_warnings"  # a core's result may carry warnings under this key; run_module hands them to Ansible


def run_module(module: AnsibleModule, core: Callable[[AnsibleModule], Dict[str, Any]],
               missing_lib: Optional[Callable[[AnsibleModule], None]] = None) -> None:
    """Run ``core`` and exit; never let a traceback reach the user."""
    if missing_lib is not None:
        missing_lib(module)
    try:
        result = core(module)
    except VirtfleetError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(
            msg="internal error in %s: %s: %s (please report this with the 'exception' output)"
            % (module._name, type(exc).__name__, exc),
            exception=traceback.format_exc(),
        )
    for warning in result.pop(WARNINGS_KEY, None) or []:
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    if result.get("failed"):
        result.pop("failed")
        module.fail_json(**result)  # a list form with failed items: the task fails, naming them
    module.exit_json(**result)


def run_core(spec, core: Callable[..., Dict[str, Any]], requires: Sequence[Callable[[AnsibleModule], None]] = (),
             prepare: Optional[Callable[[AnsibleModule], None]] = None) -> None:
    """The whole ``main()`` of a module: build it from ``spec`` (an ``_argspec.ArgumentSpec``), check its
    libraries (``requires``), let ``prepare`` adjust it (extra no_log values), then run the plain function
    ``core(params, check_mode=..., diff=...)`` and exit with its result."""
    try:
        module = spec.create_ansible_module()
    except (ArithmeticError, ValueError, TypeError) as exc:
        # ansible-core's own type checks can raise instead of reporting (int('INFINITY') -> OverflowError):
        # still a clear failure, in the module protocol, with no traceback. There is no AnsibleModule to call
        # fail_json on, so this writes the protocol's failure itself, as AnsibleModule does for unreadable input.
        # pylint: disable-next=ansible-bad-function
        print(json.dumps({"failed": True, "msg": "the module's arguments could not be checked (%s: %s): an option "
                          "holds a value of the wrong kind, such as text where a number is expected"
                          % (type(exc).__name__, exc)}))
        sys.exit(1)  # pylint: disable=ansible-bad-function

    def call(mod: AnsibleModule) -> Dict[str, Any]:
        for require in requires:
            require(mod)
        if prepare is not None:
            prepare(mod)
        return core(dict(mod.params), check_mode=mod.check_mode, diff=mod._diff)

    run_module(module, call)
