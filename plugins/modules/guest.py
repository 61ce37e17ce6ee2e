#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: guest
short_description: Boot whole guests (image, disks, domain XML, domain) in one call
version_added: 0.1.0
description:
  - For each guest, does what M(virtfleet.libvirt.image_cache), M(virtfleet.libvirt.guest_disk),
    M(virtfleet.libvirt.domain_xml) and M(virtfleet.libvirt.domain) do, in that order and each on the results
    of the one before. It caches the image, builds the disks on it, writes the domain XML with those disks, and
    defines the domain from it and brings it to its state.
  - One task for all the guests of a hypervisor (O(items)) instead of four, which is what the
    C(virtfleet.libvirt.boot) role calls. Ansible spends a fixed time on every task whatever the module does;
    for a fleet that is already as described, that time is most of the run.
  - Each part is idempotent as its module is, with the same fast paths; a re-run changes nothing and reads only
    state. Check mode predicts each part as its module would.
  - A part that fails stops its guest (the parts after it are not run) and the result says which part failed
    and what the parts before it did; the other guests of O(items) go on.
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.connection
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
  - virtfleet.libvirt.items.guest
  - virtfleet.libvirt.items.guest_parts
options:
  name:
    description:
      - Name of the guest (its domain, and the directory of its files below O(instances_path)).
      - Required, unless O(items) lists the guests.
    type: str
"""

EXAMPLES = r"""
- name: Boot two guests of this hypervisor in one call
  virtfleet.libvirt.guest:
    items:
      - name: web1
        image: {url: "https://images.example.com/debian-12.qcow2", checksum: "sha256:{{ debian_sha256 }}"}
        disks:
          - {kind: root, size: 20G}
          - {kind: ephemeral, size: 10G, fs_type: ext4}
        xml: {vcpus: 2, memory: 2G, nics: [{network: default}], metadata: {flavor: m1.small}}
      - name: web2
        image: {url: "https://images.example.com/debian-12.qcow2", checksum: "sha256:{{ debian_sha256 }}"}
        disks: [{kind: root, size: 20G}]
        xml: {vcpus: 1, memory: 1G, nics: [{network: default}]}
        domain: {state: running, autostart: true}
  register: booted

- name: Their states and consoles
  ansible.builtin.debug:
    msg: "{{ booted.results | map(attribute='state') | list }}, {{ booted.results | map(attribute='console_log') }}"
"""

RETURN = r"""
results:
  description:
    - With O(items), one result per element, in order, with the keys below plus C(item) (the element's O(name)),
      C(failed) and, for a failed element, C(msg).
  returned: with O(items)
  type: list
  elements: dict
state:
  description: State of the domain after the task (as M(virtfleet.libvirt.domain) returns it).
  returned: when every part ran
  type: str
  sample: running
console_log:
  description: File the guest's serial console is logged to.
  returned: when every part ran
  type: str
  sample: /var/lib/virtfleet/instances/web1/console.log
image:
  description: The result of the image part (the keys M(virtfleet.libvirt.image_cache) returns).
  returned: when the image part ran
  type: dict
disks:
  description: The results of the disk parts, in order (the keys M(virtfleet.libvirt.guest_disk) returns).
  returned: when a disk part ran
  type: list
  elements: dict
xml:
  description: The result of the domain XML part (the keys M(virtfleet.libvirt.domain_xml) returns, without the
    XML text itself).
  returned: when the domain XML part ran
  type: dict
domain:
  description: The result of the domain part (the keys M(virtfleet.libvirt.domain) returns).
  returned: when every part ran
  type: dict
failed_part:
  description: The part that failed (C(image), C(disks), C(xml) or C(domain)); the parts before it are in the
    result.
  returned: on failure
  type: str
  sample: disks
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import run_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._guest.core import ensure_guests
from ansible_collections.virtfleet.libvirt.plugins.module_utils._guest.spec import MODULE_SPEC, hide_image_url_passwords
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import require_libvirt_and_lxml


def main():
    run_core(MODULE_SPEC, ensure_guests, requires=[require_libvirt_and_lxml], prepare=hide_image_url_passwords)


if __name__ == "__main__":
    main()
