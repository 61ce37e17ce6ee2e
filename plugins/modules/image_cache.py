#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_cache
short_description: Fetch, verify, inspect and cache a disk image on a hypervisor
version_added: 0.1.0
description:
  - Caches one image under C(<instances_path>/_base/) so that guest disks can use it as their base.
  - The image is streamed once; its checksum is computed while it arrives, and compressed images (gzip, xz,
    bzip2, and zstd when the python C(zstandard) module is installed) are recognised by their magic bytes and
    decompressed on the way.
  - Before qemu-img reads anything, the file is inspected from its header bytes and refused when it is
    unsafe (qcow2 with a backing or external data file, VMDK with extents naming host files, QED, LUKS, a
    format other than the declared one, a virtual size above O(max_virtual_size), ...). A converted file is
    inspected again.
  - The cached file is named after the sha1 of the image's identity (URL without credentials, checksum and
    O(cache_format)) and described by C(<name>.info.json). A re-run trusts that record together with the
    file's size and mtime, so it costs no download and no hashing. Files cached by an older inspector are
    inspected again.
  - Concurrent runs for one image wait on a per-image lock under C(<instances_path>/locks/); one downloads,
    the others reuse its result. No partial or temporary file is ever left under a usable name.
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
options:
  url:
    description:
      - Where the image comes from. C(http://), C(https://), C(file://) or an absolute path on the hypervisor.
      - Credentials in the URL are used for the request but never appear in names, records or messages.
      - Required with O(state=present) and O(state=absent).
    type: str
  checksum:
    description:
      - Expected digest of the bytes downloaded (before decompression), as C(<algorithm>:<hex>), or
        C(<algorithm>:<url or path of a SUMS file>) whose line for the image's file name is used.
      - Algorithms are C(sha256), C(sha384) and C(sha512). A mismatch fails the task and keeps nothing.
      - Without a checksum an image is cached once per URL and not fetched again while its record is valid.
    type: str
  format:
    description:
      - Format the source image is declared to have. The detected format must match it (an image declared
        C(raw) that is really qcow2 is refused).
      - When not given, the detected format is used; it must be one we consider safe.
    type: str
    choices: [raw, qcow2, vmdk, vhd, vhdx, vdi, iso]
  cache_format:
    description:
      - Format of the cached file. C(raw) and C(qcow2) convert when needed (into a temporary file that is
        inspected again); C(source) keeps the format that was downloaded.
    type: str
    default: raw
    choices: [raw, qcow2, source]
  max_virtual_size:
    description:
      - Largest virtual size accepted, such as C(200G) (binary units) or a number of bytes. Protects the
        hypervisor's disk from small files that expand hugely. The download also stops once the file on
        disk grows well beyond it.
    type: str
    default: 1T
  state:
    description:
      - C(present) caches the image.
      - C(absent) removes the image's cached file and record; refused while a guest disk's backing chain
        uses it, unless O(force). The image is identified as for C(present), by O(url), O(checksum) and
        O(cache_format).
      - C(pruned) removes every cached image that is in no guest disk's backing chain under O(instances_path)
        and has been unused for O(min_unused_age). O(url) is not used. Every regular file in C(_base) is
        considered, including bases other modules keep there (ephemeral and swap bases).
      - A disk's backing chain is read with qemu-img when the disk's format is recorded in its instance's
        C(disk.info.json); for other files only their own qcow2 header is read, never probed by qemu-img.
    type: str
    default: present
    choices: [present, absent, pruned]
  force:
    description: With O(state=absent), remove the image even when guest disks still use it.
    type: bool
    default: false
  min_unused_age:
    description:
      - With O(state=pruned), how long a cached image must have been unused before it is removed; seconds or
        a number with C(s), C(m), C(h), C(d) or C(w).
      - An image counts as used when it is in the backing chain of any disk under O(instances_path); its
        last use is the latest of its fetch, its re-inspection and its last read by a guest (access time). A
        cached re-run with O(state=present) writes nothing, so it does not count as a use.
    type: str
    default: 24h
  verify:
    description:
      - C(quick) trusts the record plus the file's size and mtime.
      - C(full) also inspects the cached file again, compares its sha256 with the record when one was
        recorded, and runs C(qemu-img check) on non-raw files.
    type: str
    default: quick
    choices: [quick, full]
  timeout:
    description: Seconds an HTTP connection or read may stall before the attempt fails.
    type: int
    default: 60
  retries:
    description: How many times a transient failure (refused or reset connection, timeout, HTTP 5xx, body cut
      short) is retried, with exponential backoff starting at O(retry_delay).
    type: int
    default: 3
  retry_delay:
    description: Seconds before the first retry; doubled for each further one (at most 60).
    type: float
    default: 1.0
  lock_timeout:
    description: Seconds to wait for another run that is caching the same image.
    type: int
    default: 1800
  headers:
    description: Extra HTTP request headers. Their values are hidden from logs as they often carry tokens.
    type: dict
  url_username:
    description: User name for HTTP basic authentication.
    type: str
  url_password:
    description: Password for HTTP basic authentication.
    type: str
  force_basic_auth:
    description: Send the basic authentication header with the first request instead of waiting for a 401.
    type: bool
    default: false
  validate_certs:
    description: Verify the server's TLS certificate. Only disable it for test servers.
    type: bool
    default: true
  client_cert:
    description: PEM file with a client certificate (and optionally its key) for TLS client authentication.
    type: path
  client_key:
    description: PEM file with the key of O(client_cert) when it is not in that file.
    type: path
  use_proxy:
    description: Use the proxies set in the environment (C(http_proxy), C(https_proxy), C(no_proxy)).
    type: bool
    default: true
notes:
  - The bytes are hashed, decompressed and written in one pass; no second read of a large file is made.
  - Guest disks built from a cached image record its path; see M(virtfleet.libvirt.guest_disk).
seealso:
  - module: virtfleet.libvirt.guest_disk
"""

EXAMPLES = r"""
- name: Cache a cloud image as raw, verified against the distribution's SUMS file
  virtfleet.libvirt.image_cache:
    url: https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
    checksum: sha512:https://cloud.debian.org/images/cloud/bookworm/latest/SHA512SUMS
    format: qcow2
    cache_format: raw
  register: image

- name: Cache an image published on an internal server behind basic authentication
  virtfleet.libvirt.image_cache:
    url: https://images.example.com/base/web-2024.03.raw.xz
    checksum: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    format: raw
    url_username: fleet
    url_password: "{{ vault_image_password }}"
    cache_format: source

- name: Remove cached images no guest has used for a week
  virtfleet.libvirt.image_cache:
    state: pruned
    min_unused_age: 7d
"""

RETURN = r"""
path:
  description: Path of the cached image on the hypervisor (use it as the base of guest disks).
  returned: with state present or absent
  type: str
  sample: /var/lib/virtfleet/instances/_base/0b4e1f0a6c3f7d0f4c8b6a1c2d9e4f5a6b7c8d9e
format:
  description: Format of the cached file (C(raw), C(qcow2), ...). Null in check mode when not yet known.
  returned: with state present
  type: str
  sample: raw
source_format:
  description: Format of the image as downloaded (after decompression), as detected by the inspector.
  returned: with state present
  type: str
  sample: qcow2
virtual_size:
  description: Size of the disk the image holds, in bytes. Null in check mode before a fetch.
  returned: with state present
  type: int
  sample: 2147483648
actual_size:
  description: Space the cached file takes on disk, in bytes (sparse regions are not counted).
  returned: with state present
  type: int
  sample: 341835776
size:
  description: Apparent size of the cached file in bytes.
  returned: with state present
  type: int
checksum:
  description: The verified checksum, as C(<algorithm>:<hex>) (a SUMS reference resolved), or null.
  returned: with state present
  type: str
  sample: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
fetched:
  description: Whether the image was downloaded by this run.
  returned: always
  type: bool
bytes:
  description: Bytes received from the source by this run (0 when the cache was used).
  returned: with state present
  type: int
seconds:
  description: Time the transfer took, in seconds.
  returned: with state present
  type: float
throughput:
  description: Bytes per second of the transfer (0 when nothing was fetched).
  returned: with state present
  type: int
compression:
  description: Compression the source was decompressed from (C(gzip), C(xz), C(bzip2), C(zstd)), or null.
  returned: with state present
  type: str
actions:
  description: What was done (in check mode, what would be done), such as C(fetch), C(decompress), C(convert),
    C(reinspect), C(remove).
  returned: always
  type: list
  elements: str
  sample: [fetch, convert]
users:
  description: Guest disks whose backing chain uses the image.
  returned: with state absent
  type: list
  elements: str
removed:
  description: Cached images removed (in check mode, that would be removed).
  returned: with state pruned
  type: list
  elements: str
kept:
  description: Cached images kept because they are used or were used recently.
  returned: with state pruned
  type: list
  elements: str
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import (
    INSTANCES_ARGS, build_module, merge_specs, run_module,
)

ARGUMENT_SPEC = merge_specs(INSTANCES_ARGS, {
    "url": {"type": "str"},
    "checksum": {"type": "str"},
    "format": {"type": "str", "choices": ["raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso"]},
    "cache_format": {"type": "str", "default": "raw", "choices": ["raw", "qcow2", "source"]},
    "max_virtual_size": {"type": "str", "default": "1T"},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent", "pruned"]},
    "force": {"type": "bool", "default": False},
    "min_unused_age": {"type": "str", "default": "24h"},
    "verify": {"type": "str", "default": "quick", "choices": ["quick", "full"]},
    "timeout": {"type": "int", "default": 60},
    "retries": {"type": "int", "default": 3},
    "retry_delay": {"type": "float", "default": 1.0},
    "lock_timeout": {"type": "int", "default": 1800},
    "headers": {"type": "dict", "no_log": True},
    "url_username": {"type": "str"},
    "url_password": {"type": "str", "no_log": True},
    "force_basic_auth": {"type": "bool", "default": False},
    "validate_certs": {"type": "bool", "default": True},
    "client_cert": {"type": "path"},
    "client_key": {"type": "path", "no_log": False},
    "use_proxy": {"type": "bool", "default": True},
})


def _hide_url_passwords(module):
    """A password written into url (or into a SUMS url in checksum) must not come back in the task's output."""
    from urllib.parse import unquote, urlsplit

    candidates = [module.params.get("url") or ""]
    checksum = module.params.get("checksum") or ""
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


def core(module):
    from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.cache import ensure_image

    _hide_url_passwords(module)
    return ensure_image(dict(module.params), module.check_mode)


def main():
    module = build_module(ARGUMENT_SPEC, required_if=[("state", "present", ["url"]), ("state", "absent", ["url"])])
    run_module(module, core)


if __name__ == "__main__":
    main()
