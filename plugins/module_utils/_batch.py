# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: the list form of a module (one call for many guests, disks or images).

Ansible pays a fixed cost per host and task whatever the module does, so a fleet is fast only when one
module call does the work of many. Every module's per-item options (its core's ``ITEM_SPEC``) are also
accepted as a list under ``items``: each element takes the same options; an option an element leaves
out takes the module's top-level value (which carries the documented default). The same plain core runs
for each item, the slow parts concurrently in a bounded thread pool (``batch_concurrency``); per-guest
locks keep concurrent items and concurrent runs apart. One item's failure does not stop the others; the
task fails listing exactly which items failed and why, as a loop would.
"""

from __future__ import annotations

import copy
import traceback
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import WARNINGS_KEY, VirtfleetError

ITEMS = "items"
CONCURRENCY = "batch_concurrency"
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
# Result keys that belong to the batch, not to one item.
_BATCH_KEYS = ("changed", "failed", "msg", "diff", WARNINGS_KEY)


def list_form_spec(shared: ArgumentSpec, item: ArgumentSpec, key: str, key_required: bool = True) -> ArgumentSpec:
    """The module spec of a core that has a list form: the shared options, the item options at the top
    level (the single form, and the defaults of the list), and ``items``.

    ``key`` is the option that names an item (``name``, ``guest``, ``url``): required in each element, and
    at the top level unless ``items`` is given (with ``key_required``; an image_cache ``pruned`` has no url).
    """
    top = copy.deepcopy(item.argument_spec)
    top[key] = dict(top[key])
    top[key].pop("required", None)
    elements = copy.deepcopy(item.argument_spec)
    for option in elements.values():
        option.pop("default", None)  # an element that leaves an option out takes the top-level value
    if key_required:
        elements[key]["required"] = True
    items = {"type": "list", "elements": "dict", "options": elements}
    items.update(item.constraints())
    batch = ArgumentSpec({ITEMS: items, CONCURRENCY: {"type": "int", "default": DEFAULT_CONCURRENCY}},
                         mutually_exclusive=[(key, ITEMS)],
                         required_one_of=[(key, ITEMS)] if key_required else None)
    # At the top level only the exclusions hold: a requirement (required_if, ...) would apply to a call that
    # lists its items instead; each element keeps them all, and the core checks the single form's.
    single = ArgumentSpec(top, item.mutually_exclusive)
    return shared.merge(single, batch)


def item_params(params: Dict[str, Any], item: ArgumentSpec, element: Dict[str, Any]) -> Dict[str, Any]:
    """One element's complete parameters: its own values, else the top-level ones, plus the shared options."""
    merged = {name: value for name, value in params.items() if name not in (ITEMS, CONCURRENCY)}
    for name in item.argument_spec:
        if element.get(name) is not None:
            merged[name] = element[name]
    return merged


def _concurrency(params: Dict[str, Any]) -> int:
    value = params.get(CONCURRENCY, DEFAULT_CONCURRENCY)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise VirtfleetError("%s must be a number from 1 to %d, got %r" % (CONCURRENCY, MAX_CONCURRENCY, value))
    return value


def _one(run: Callable[[Dict[str, Any]], Dict[str, Any]], params: Dict[str, Any], label: str,
         described: str) -> Dict[str, Any]:
    """The item's result, or its failure as data (never an exception: the other items go on)."""
    try:
        result = dict(run(params))
        result["failed"] = False
    except VirtfleetError as exc:
        result = dict(exc.details)
        result.update(failed=True, msg=exc.msg)
        result.setdefault("changed", False)
    except Exception as exc:  # pylint: disable=broad-except
        # an unexpected error of one item is reported with that item, like the single form would
        result = {"failed": True, "changed": False, "exception": traceback.format_exc(),
                  "msg": "internal error: %s: %s (please report this with the 'exception' output)"
                         % (type(exc).__name__, exc)}
    result["item"] = label
    result["_described"] = described
    return result


def run_items(params: Dict[str, Any], item: ArgumentSpec, key: str, run: Callable[[Dict[str, Any]], Dict[str, Any]],
              diff: bool = False, serial: Optional[Callable[[Dict[str, Any]], Any]] = None,
              describe: Optional[Callable[[Dict[str, Any]], str]] = None) -> Dict[str, Any]:
    """Run ``run`` (the plain core, bound to what the batch shares) for every element of ``params['items']``.

    ``serial`` maps an item's parameters to a key; items with equal keys run one after the other, in order
    (two disks of one guest, say), while items with different keys run concurrently.
    """
    elements = params.get(ITEMS) or []
    workers = _concurrency(params)
    prepared = [item_params(params, item, element) for element in elements]
    labels = [str(p.get(key)) for p in prepared]
    described = [describe(p) if describe is not None else label for p, label in zip(prepared, labels)]
    groups: Dict[Any, List[int]] = {}
    for index, one in enumerate(prepared):
        groups.setdefault(serial(one) if serial is not None else index, []).append(index)
    results: List[Optional[Dict[str, Any]]] = [None] * len(prepared)

    def run_group(indices: List[int]) -> None:
        for index in indices:
            results[index] = _one(run, prepared[index], labels[index], described[index])

    if len(groups) <= 1 or workers == 1:
        for indices in groups.values():
            run_group(indices)
    else:
        from concurrent.futures import ThreadPoolExecutor  # only a batch with work for several threads needs it

        with ThreadPoolExecutor(max_workers=min(workers, len(groups))) as pool:
            list(pool.map(run_group, groups.values()))
    return batch_result(results, diff)


def batch_result(results: List[Dict[str, Any]], diff: bool) -> Dict[str, Any]:
    """The module result for the items' ``results``: changed if any changed, failed naming each failure."""
    warnings: List[str] = []
    diffs: List[Dict[str, Any]] = []
    for result in results:
        name = result.pop("_described", None) or result["item"]
        result["_name"] = name
        for warning in result.pop(WARNINGS_KEY, None) or []:
            warnings.append("%s: %s" % (name, warning))
        item_diff = result.pop("diff", None) if not diff else result.get("diff")
        if diff and item_diff and result.get("changed"):
            for one in item_diff if isinstance(item_diff, list) else [item_diff]:
                one = dict(one)
                for header in ("before_header", "after_header"):
                    one[header] = "%s: %s" % (name, one.get(header) or "")
                diffs.append(one)
    failed = [r for r in results if r.get("failed")]
    out: Dict[str, Any] = {"changed": any(r.get("changed") for r in results), "results": results,
                           WARNINGS_KEY: warnings}
    if diff:
        out["diff"] = diffs
    if failed:
        out["failed"] = True
        out["msg"] = "%d of %d items failed: %s" % (len(failed), len(results), "; ".join(
            "%s: %s" % (r["_name"], r.get("msg", "failed")) for r in failed))
    for result in results:
        result.pop("_name", None)
    return out
