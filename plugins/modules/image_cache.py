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
  - virtfleet.libvirt.common.connection
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
  - virtfleet.libvirt.items.image_cache
options:
  url:
    description:
      - Where the image comes from. C(http://), C(https://), C(file://) or an absolute path on the hypervisor.
      - Credentials in the URL are used for the request but never appear in names, records or messages.
      - Required with O(state=present) and O(state=absent), unless O(items) lists the images.
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
      - C(absent) removes the image's cached file and record; refused while it is in use (see below), unless
        O(force). The image is identified as for C(present), by O(url), O(checksum) and O(cache_format).
      - C(pruned) removes every cached image that is not in use and has been unused for O(min_unused_age).
        O(url) is not used. Every regular file in C(_base) is considered, including bases other modules keep
        there (ephemeral and swap bases).
      - An image is in use while a disk of any libvirt domain defined or running on the hypervisor (asked
        through O(uri), wherever the disk lives), or a file in such a disk's backing chain, is the image; and
        while a disk under O(instances_path) (of a guest not defined yet) is based on it.
      - Backing chains are read from the qcow2 headers in Python, never by qemu-img. A disk in the instances
        tree is followed down its chain when its instance's C(disk.info.json) records it as qcow2; for a file
        without a record only its own header is read.
      - Removals take the image's lock exclusively and check again under it that nothing uses the image;
        M(virtfleet.libvirt.guest_disk) holds the same lock shared while it makes an overlay or copy of it.
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
      - An image in use (see O(state)) is always kept; otherwise its last use is the latest of its fetch,
        its re-inspection and its last read by a guest (access time). A cached re-run with O(state=present)
        writes nothing, so it does not count as a use.
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
    description: Seconds an HTTP connection or read may stall before the attempt fails (1 to 86400).
    type: int
    default: 60
  retries:
    description: How many times a transient failure (refused or reset connection, timeout, HTTP 5xx, body cut
      short) is retried (0 to 100), with exponential backoff starting at O(retry_delay).
    type: int
    default: 3
  retry_delay:
    description: Seconds before the first retry (0 to 3600); doubled for each further one (at most 60).
    type: float
    default: 1.0
  lock_timeout:
    description: Seconds (0 to 604800) to wait for another run that is caching, using or removing the same image.
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
results:
  description:
    - With O(items), one result per element, in order, with the keys below plus C(item) (the element's O(url)),
      C(failed) and, for a failed element, C(msg).
  returned: with O(items)
  type: list
  elements: dict
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
  returned: always (with O(items), in each element of RV(results))
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
  returned: always (with O(items), in each element of RV(results))
  type: list
  elements: str
  sample: [fetch, convert]
users:
  description: What uses the image (removed anyway with O(force)); disks in the instances tree by their path,
    libvirt domains as C(domain <name>).
  returned: with state absent
  type: list
  elements: str
diff:
  description:
    - In diff mode, the cached image before and after the task (C(state) C(present), C(absent), or C(unusable)
      for a file its record does not describe, with what the record says of it); with O(state=pruned) the list
      of cached files before and after.
  returned: in diff mode
  type: dict
  sample: {before: {path: /var/lib/virtfleet/instances/_base/0b4e1f0a, state: absent},
           after: {path: /var/lib/virtfleet/instances/_base/0b4e1f0a, state: present, format: raw,
                   source_format: qcow2, virtual_size: 2147483648, size: 2147483648, checksum: null,
                   inspector_version: 1}}
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

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import run_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.cache import image_cache_items
from ansible_collections.virtfleet.libvirt.plugins.module_utils._image.spec import MODULE_SPEC, hide_url_passwords


def main():
    run_core(MODULE_SPEC, image_cache_items, prepare=hide_url_passwords)


if __name__ == "__main__":
    main()
