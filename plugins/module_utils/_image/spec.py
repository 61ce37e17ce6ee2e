# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: image_cache's options, defined once.

``ITEM_SPEC`` is the per-image argument spec (its choices come from the constants below, which the
core uses too), ``MODULE_SPEC`` the module's (shared connection and instances options merged in), and
``ImageSpec.from_params`` turns Ansible's parameters into the typed, validated request a run works
from. What an option's value means (a URL without its credentials, a checksum, a duration) is
decided here as well, so that every later step reads typed values and nothing parses twice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, NamedTuple, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from ansible_collections.virtfleet.libvirt.plugins.module_utils._argspec import CONNECTION, INSTANCES, ArgumentSpec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._batch import list_form_spec
from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._layout import CacheLayout, cache_layout
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import SizeError, parse_size

STATES = ("present", "absent", "pruned")
CACHE_FORMATS = ("raw", "qcow2", "source")
# Formats a user may declare for the source; the inspector recognises more, and refuses them unless declared.
DECLARED_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso")
VERIFY_MODES = ("quick", "full")
# Supported digests and their length in hex digits.
CHECKSUM_ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
URL_SCHEMES = ("http", "https", "file")
DEFAULT_MAX_VIRTUAL_SIZE = "1T"
DEFAULT_MIN_UNUSED_AGE = "24h"
DEFAULT_TIMEOUT = 60
DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_LOCK_TIMEOUT = 1800
HEX_DIGITS = "0123456789abcdefABCDEF"
# Ranges of the numeric options (inclusive), checked before anything runs: a value outside would fail
# deep inside (a negative sleep, a socket timeout that does not fit) or make a run wait for ever.
RANGES = {"timeout": (1, 86400), "retries": (0, 100), "retry_delay": (0, 3600), "lock_timeout": (0, 7 * 86400)}

ITEM_SPEC = ArgumentSpec({
    "url": {"type": "str"},
    "checksum": {"type": "str"},
    "format": {"type": "str", "choices": list(DECLARED_FORMATS)},
    "cache_format": {"type": "str", "default": CACHE_FORMATS[0], "choices": list(CACHE_FORMATS)},
    "max_virtual_size": {"type": "str", "default": DEFAULT_MAX_VIRTUAL_SIZE},
    "state": {"type": "str", "default": STATES[0], "choices": list(STATES)},
    "force": {"type": "bool", "default": False},
    "min_unused_age": {"type": "str", "default": DEFAULT_MIN_UNUSED_AGE},
    "verify": {"type": "str", "default": VERIFY_MODES[0], "choices": list(VERIFY_MODES)},
    "timeout": {"type": "int", "default": DEFAULT_TIMEOUT},
    "retries": {"type": "int", "default": DEFAULT_RETRIES},
    "retry_delay": {"type": "float", "default": DEFAULT_RETRY_DELAY},
    "lock_timeout": {"type": "int", "default": DEFAULT_LOCK_TIMEOUT},
    "headers": {"type": "dict", "no_log": True},
    "url_username": {"type": "str"},
    "url_password": {"type": "str", "no_log": True},
    "force_basic_auth": {"type": "bool", "default": False},
    "validate_certs": {"type": "bool", "default": True},
    "client_cert": {"type": "path"},
    "client_key": {"type": "path", "no_log": False},
    "use_proxy": {"type": "bool", "default": True},
}, required_if=[("state", "present", ["url"]), ("state", "absent", ["url"])])

# The module: one image (the options above at the top level), or many in ``items`` (see _batch).
MODULE_SPEC = list_form_spec(CONNECTION.merge(INSTANCES), ITEM_SPEC, "url", key_required=False)


# --------------------------------------------------------------------------------------------------
# What a url and a checksum mean
# --------------------------------------------------------------------------------------------------

def is_hex(value: str) -> bool:
    """Whether ``value`` is a non-empty run of hex digits."""
    return bool(value) and not value.strip(HEX_DIGITS)


def _split(url: str):
    """``urlsplit(url)``, or a clear refusal: urlsplit raises ValueError for some malformed URLs (an unclosed
    IPv6 bracket). The URL is not repeated: a password in it could not be found to be hidden."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise VirtfleetError("an image or SUMS url cannot be parsed (%s): use http://, https://, file:// or an "
                             "absolute path on the hypervisor" % exc) from None


def public_url(url: str) -> str:
    """``url`` without user name and password, for names, records and messages."""
    if url.startswith("/"):
        return "file://" + os.path.normpath(url)
    parts = _split(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_scheme(url: str) -> str:
    """``http``, ``https`` or ``file``; anything else is refused with the accepted forms."""
    if url.startswith("/"):
        return "file"
    scheme = _split(url).scheme.lower()
    if scheme not in URL_SCHEMES:
        raise VirtfleetError("unsupported image url %s: use http://, https://, file:// or an absolute path on "
                             "the hypervisor" % public_url(url))
    return scheme


def local_path_of(url: str) -> str:
    """The host path of a ``file://`` URL or plain absolute path."""
    if url.startswith("/"):
        return url
    parts = _split(url)
    if parts.netloc not in ("", "localhost"):
        raise VirtfleetError("file URL %s names a remote host; only file:///path is supported" % url)
    return unquote(parts.path)


def file_name_of(url: str) -> str:
    """The last path element of ``url``: the name a SUMS file lists the image under."""
    path = url if url.startswith("/") else unquote(_split(url).path)
    return os.path.basename(path.rstrip("/"))


class Checksum(NamedTuple):
    """``algorithm`` and either a lower-case hex digest or the location of a SUMS file listing it."""

    algorithm: str
    value: str

    @property
    def is_sums(self) -> bool:
        return is_sums_reference(self.value)

    @property
    def text(self) -> str:
        """``<algorithm>:<digest>``, as records and results carry it."""
        return "%s:%s" % (self.algorithm, self.value)


def is_sums_reference(value: str) -> bool:
    return value.startswith("/") or "://" in value


def parse_checksum(value: Optional[str]) -> Optional[Checksum]:
    """``(algorithm, hex digest or SUMS location)`` from ``"sha256:<hex>"`` / ``"sha256:<url>"``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or ":" not in value:
        raise VirtfleetError("checksum %r: expected '<algorithm>:<hex digest>' or '<algorithm>:<url of a SUMS "
                             "file>' with algorithm one of %s" % (value, ", ".join(sorted(CHECKSUM_ALGORITHMS))))
    algo, rest = value.split(":", 1)
    algo = algo.strip().lower()
    rest = rest.strip()
    if algo not in CHECKSUM_ALGORITHMS:
        raise VirtfleetError("checksum algorithm %r is not supported; use one of %s"
                             % (algo, ", ".join(sorted(CHECKSUM_ALGORITHMS))))
    if is_sums_reference(rest):
        return Checksum(algo, rest)
    if not is_hex(rest) or len(rest) != CHECKSUM_ALGORITHMS[algo]:
        raise VirtfleetError("checksum %s:%s is not a %s digest (%d hex digits expected)"
                             % (algo, rest, algo, CHECKSUM_ALGORITHMS[algo]))
    return Checksum(algo, rest.lower())


_AGE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(value: Any) -> float:
    """Seconds in ``value``: a number of seconds or ``30m``, ``24h``, ``7d``, ``2w``."""
    if isinstance(value, bool):
        raise VirtfleetError("min_unused_age: expected a duration such as 24h, got %r" % (value,))
    if isinstance(value, (int, float)):
        if value < 0:
            raise VirtfleetError("min_unused_age cannot be negative (%r)" % (value,))
        return float(value)
    match = _AGE_RE.fullmatch(str(value))
    if not match:
        raise VirtfleetError("min_unused_age: cannot parse %r; use seconds or a number with s, m, h, d or w" % (value,))
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


# --------------------------------------------------------------------------------------------------
# The typed request
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Transport:
    """How the image (and a SUMS file) is reached: Ansible's open_url options, and retries."""

    headers: Optional[Dict[str, Any]] = None
    url_username: Optional[str] = None
    url_password: Optional[str] = None
    force_basic_auth: bool = False
    validate_certs: bool = True
    client_cert: Optional[str] = None
    client_key: Optional[str] = None
    use_proxy: bool = True
    timeout: int = DEFAULT_TIMEOUT
    retries: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "Transport":
        for name in ("timeout", "retries", "retry_delay"):
            in_range(params, name)
        return cls(headers=params.get("headers") or None, url_username=params.get("url_username"),
                   url_password=params.get("url_password"), force_basic_auth=bool(params.get("force_basic_auth")),
                   validate_certs=params.get("validate_certs", True) is not False,
                   client_cert=params.get("client_cert"), client_key=params.get("client_key"),
                   use_proxy=params.get("use_proxy", True) is not False,
                   timeout=int(params.get("timeout") or DEFAULT_TIMEOUT), retries=int(params.get("retries") or 0),
                   retry_delay=float(_given(params, "retry_delay", DEFAULT_RETRY_DELAY)))


@dataclass(frozen=True)
class ImageSpec:
    """One image_cache request, validated: what to cache (or remove), where, and how to fetch it."""

    state: str
    layout: CacheLayout
    url: Optional[str]
    checksum: Optional[Checksum]
    cache_format: str
    declared_format: Optional[str]
    max_virtual_size: int
    verify: str
    force: bool
    min_unused_age: float
    lock_timeout: float
    transport: Transport
    uri: str

    @property
    def instances_path(self) -> str:
        return self.layout.instances_path

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "ImageSpec":
        state = params.get("state") or STATES[0]
        if state not in STATES:
            raise VirtfleetError("state must be %s, got %r" % (_one_of(STATES), state))
        url = params.get("url") or None
        if state != "pruned":
            if not url:
                raise VirtfleetError("url is required with state=%s" % state)
            if url_scheme(url) == "file" and not os.path.isabs(local_path_of(url)):
                raise VirtfleetError("image path %s is not absolute" % url)
        cache_format = params.get("cache_format") or CACHE_FORMATS[0]
        if cache_format not in CACHE_FORMATS:
            raise VirtfleetError("cache_format must be %s, got %r" % (_one_of(CACHE_FORMATS), cache_format))
        declared = params.get("format") or None
        if declared is not None and declared not in DECLARED_FORMATS:
            raise VirtfleetError("format must be %s, got %r" % (_one_of(DECLARED_FORMATS), declared))
        verify = params.get("verify") or VERIFY_MODES[0]
        if verify not in VERIFY_MODES:
            raise VirtfleetError("verify must be %s, got %r" % (_one_of(VERIFY_MODES), verify))
        try:
            max_virtual_size = parse_size(params.get("max_virtual_size") or DEFAULT_MAX_VIRTUAL_SIZE,
                                          "max_virtual_size")
        except SizeError as exc:
            raise VirtfleetError(str(exc))
        min_age = params.get("min_unused_age")
        in_range(params, "lock_timeout")
        return cls(state=state, layout=cache_layout(params.get("instances_path")), url=url,
                   checksum=parse_checksum(params.get("checksum")), cache_format=cache_format,
                   declared_format=declared, max_virtual_size=max_virtual_size, verify=verify,
                   force=bool(params.get("force")),
                   min_unused_age=parse_age(DEFAULT_MIN_UNUSED_AGE if min_age is None else min_age),
                   lock_timeout=float(_given(params, "lock_timeout", DEFAULT_LOCK_TIMEOUT)),
                   transport=Transport.from_params(params), uri=params.get("uri") or CONNECTION.defaults()["uri"])


def _given(params: Dict[str, Any], name: str, default: Any) -> Any:
    value = params.get(name)
    return default if value is None else value


def in_range(params: Dict[str, Any], name: str) -> None:
    """Refuse a numeric option outside ``RANGES`` (None takes the default later)."""
    value = params.get(name)
    if value is None:
        return
    low, high = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        unit = "a number" if name == "retries" else "a number of seconds"
        raise VirtfleetError("%s must be %s from %s to %s, got %r" % (name, unit, low, high, value))


def _one_of(choices) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def hide_url_passwords(module, part: Optional[str] = None) -> None:
    """run_core's ``prepare``: a password written into url (or into a SUMS url in checksum) must not come
    back in the task's output, so it joins the module's no_log values."""
    candidates = []
    for params in [module.params] + list(module.params.get("items") or []):
        if part is not None:  # a module whose image options are one of its parts (the guest module's image)
            params = params.get(part) or {}
        candidates.append(params.get("url") or "")
        checksum = params.get("checksum") or ""
        if ":" in checksum:
            candidates.append(checksum.split(":", 1)[1].strip())
    for value in candidates:
        if "://" not in value or "@" not in value:
            continue
        try:
            password = urlsplit(value).password
        except ValueError:
            continue
        if password:
            module.no_log_values.update({password, unquote(password)})
