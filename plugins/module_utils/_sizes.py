# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: parsing and formatting of sizes.

Units: plain numbers are bytes; ``K``/``M``/``G``/``T``/``P`` and ``KiB``/``MiB``/... are binary
(powers of 1024, as qemu-img and libvirt use them); ``KB``/``MB``/``GB``/``TB``/``PB`` are
decimal (powers of 1000). Anything else is refused rather than guessed.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Union

_BINARY = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12, "pb": 10 ** 15}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class SizeError(ValueError):
    """A size string that cannot be understood."""


def parse_size(value: Union[str, int, float, None], what: str = "size") -> int:
    """Bytes for ``value`` such as ``10G``, ``512MiB``, ``1.5GB`` or ``1048576``."""
    if isinstance(value, bool) or value is None:
        raise SizeError("%s: expected a size such as 10G, 512M or a number of bytes, got %r" % (what, value))
    if isinstance(value, int):
        if value < 0:
            raise SizeError("%s: a size cannot be negative (%d)" % (what, value))
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise SizeError("%s: a size in bytes must be a whole, non-negative number (%r)" % (what, value))
        return int(value)
    match = _SIZE_RE.match(str(value))
    if not match:
        raise SizeError("%s: cannot parse %r; use a number with an optional unit: K, M, G, T (binary), "
                        "KiB..TiB (binary) or KB..TB (decimal)" % (what, value))
    number, unit = match.group(1), match.group(2).lower()
    if unit.endswith("ib"):
        unit = unit[:-2]
        factor = _BINARY.get(unit) if unit else None
    elif unit in _DECIMAL:
        factor = _DECIMAL[unit]
    else:
        factor = _BINARY.get(unit)
    if factor is None:
        raise SizeError("%s: unknown unit %r in %r; use K, M, G, T, P (binary), KiB..PiB or KB..PB"
                        % (what, match.group(2), value))
    result = Fraction(number) * factor  # exact: no float rounding, no overflow on long digit strings
    if result.denominator != 1:
        raise SizeError("%s: %r is not a whole number of bytes" % (what, value))
    return int(result)


def format_size(num_bytes: int) -> str:
    """Short binary rendering for messages: ``10 GiB``, ``1.5 MiB``, ``512 B``."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d %s" % (value, unit)) if value == int(value) else ("%.1f %s" % (value, unit))
        value /= 1024
    return "%d B" % num_bytes  # pragma: no cover
