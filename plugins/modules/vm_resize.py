#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vm_resize
short_description: Resize a libvirt guest (vCPUs, memory, disks), live where libvirt allows, cold otherwise
version_added: 0.1.0
description:
  - Gives a guest new vCPU and memory counts and larger disks, without re-creating it. Runs on the hypervisor
    that holds the guest, which must be defined (M(virtfleet.libvirt.domain)); its disks must be ones
    M(virtfleet.libvirt.guest_disk) made (their format is recorded, never probed).
  - Each change is planned first (RV(plan)), and applied C(live) when a running guest can take it through
    libvirt, else C(cold) (graceful shutdown, change, start) or, for a guest that is shut off, C(offline) (it
    stays off). Check mode returns the plan and changes nothing; resizing to the current size changes nothing
    and writes nothing.
  - "Live: more vCPUs up to the C(<vcpu>) maximum (the guest brings them online, as a udev rule does); more
    memory through the balloon up to C(<memory>), and through DIMMs (whole multiples of 128 MiB) up to
    C(<maxMemory>) for guests with memory headroom (M(virtfleet.libvirt.domain_xml) option
    O(virtfleet.libvirt.domain_xml#module:headroom));
    larger virtio and SCSI disks (libvirt's blockResize). Both the running guest and its persistent definition
    get the new values."
  - "Cold: vCPUs or memory above the maxima (the maxima grow with them, see O(headroom)), any decrease (only with
    O(allow_decrease)), vCPUs of guests with SMM and Secure Boot firmware (a vCPU hot-added there hangs the
    guest), and disks on IDE or SATA buses (their guests do not see a live size change). The disks that change
    are copied next to the guest first (a sparse or reflinked copy), then grown with qemu-img in their
    recorded format."
  - Disks never shrink; a smaller size is refused before anything is touched. vCPU and memory decreases are
    refused unless O(allow_decrease) is given, and then done cold.
  - The guest's C(domain.xml) (when it has one) gets the new values with the same policy
    M(virtfleet.libvirt.domain_xml) uses, so that a later run of the boot role with the new flavor changes
    nothing.
  - Every resize is recorded next to the guest in C(resize.json) (C(prepared) before the first change, then
    C(applied), then C(confirmed) or C(reverted)), with what a revert needs. Any failure after the first change
    rolls the guest back automatically to its previous definition, disks and power state, and the failure says
    what happened and what was rolled back (and, if rolling back failed too, where everything is and how to
    finish by hand).
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.connection
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
  - virtfleet.libvirt.items.vm_resize
options:
  name:
    description:
      - Name of the guest (its libvirt domain), by the one guest-name rule of this collection.
      - Required, unless O(items) lists the guests.
    type: str
  flavor:
    description:
      - The name of the flavor the guest is resized to, recorded in its virtfleet metadata as
        M(virtfleet.libvirt.domain_xml) O(virtfleet.libvirt.domain_xml#module:metadata.flavor) records it (set in the
        running guest too). Unchanged when not given.
    type: str
  vcpus:
    description:
      - Number of vCPUs the guest should have (1 to 4096). Unchanged when not given.
    type: int
  memory:
    description:
      - Memory the guest should have, as in M(virtfleet.libvirt.domain_xml)
        O(virtfleet.libvirt.domain_xml#module:memory), a size with a binary unit (C(384M), C(2G)) or an integer
        number of MiB. Unchanged when not given.
    type: raw
  max_vcpus:
    description:
      - The vCPU maximum (hot-plug headroom) after the resize. Without it the guest keeps its maximum while that
        covers O(vcpus); above it the maximum follows O(headroom).
      - A different maximum needs a restart (cold); a lower one needs O(allow_decrease).
    type: int
  max_memory:
    description:
      - The memory maximum (C(<maxMemory>), hot-plug headroom) after the resize, same format as O(memory).
        Without it the guest keeps its maximum while that covers O(memory); above it the maximum follows
        O(headroom).
      - A different maximum needs a restart (cold); a lower one needs O(allow_decrease).
    type: raw
  headroom:
    description:
      - The headroom rule of M(virtfleet.libvirt.domain_xml) O(virtfleet.libvirt.domain_xml#module:headroom).
        When O(vcpus) or O(memory) outgrow the maxima and no maximum is given, the new maxima are twice the new
        values (capped by the host); a guest without memory headroom gets it (cold).
      - Pass the same value that the guest's M(virtfleet.libvirt.domain_xml) task gets, so that both give the
        same definition for the same flavor.
    type: bool
    default: false
  disks:
    description:
      - New sizes of disks, by target device (C(vda), C(sdb)) or by what M(virtfleet.libvirt.guest_disk) made them
        as (C(root), C(ephemeral), C(swap), C(blank), meaning the files of those kinds in the instance directory). Sizes
        use binary units (C(20G)) or bytes, whole 512-byte sectors.
      - A disk only grows. The file system inside does not; the guest grows it (cloud-init's growpart does that
        at boot for the root disk). An ephemeral or swap disk keeps the file system or swap area it was made
        with until the guest grows it.
    type: dict
  mode:
    description:
      - C(auto) applies live what a running guest can take live, and everything cold when anything needs it.
      - C(live) fails before touching anything when a change needs a cold resize, saying which and why.
      - C(cold) always shuts a running guest down (for guests that must not be changed while they run).
      - A guest that is shut off is changed while it is off (C(offline)) in every mode.
    type: str
    default: auto
    choices: [auto, live, cold]
  state:
    description:
      - C(resized) resizes to the values given.
      - C(confirmed) finishes a resize left unconfirmed (O(confirm=false)), and removes its backups.
      - C(reverted) takes it back. The guest is shut down, its old disks (from the backups; disks grown live are
        cut back to their old size), old definition and old C(domain.xml) are put back, and it is started again
        when it ran before the resize. What the guest wrote after the resize is lost.
      - C(confirmed) and C(reverted) take no new values, and do nothing when the last resize is already so.
    type: str
    default: resized
    choices: [resized, confirmed, reverted]
  confirm:
    description:
      - Confirm the resize once the guest runs with its new size (its backups are removed).
      - With C(false) the guest stays resized with its backups until O(state=confirmed) or O(state=reverted)
        (a health check in between decides); another resize is refused until then.
    type: bool
    default: true
  allow_decrease:
    description:
      - Allow fewer vCPUs, less memory or lower maxima than the guest has. Always cold (live removal is not
        reliable). Disks never shrink.
    type: bool
    default: false
  shutdown_timeout:
    description:
      - Seconds (0 to 86400) to wait for the guest to power off after an ACPI shutdown request (cold resize and
        revert).
    type: int
    default: 120
  start_timeout:
    description: Seconds (0 to 86400) to wait for the guest to run again after a cold resize or a revert.
    type: int
    default: 60
  force_off:
    description:
      - Power the guest off hard when it did not shut down within O(shutdown_timeout). Without it such a guest
        makes the task fail, with nothing changed.
    type: bool
    default: false
notes:
  - "Measured on libvirt 9.0 and QEMU 7.2: a hot-added vCPU arrives offline and the guest brings it online
    (every current distribution does, with a udev rule or the guest agent). The balloon only works between 0 and
    C(<memory>) and needs the guest's virtio_balloon driver (a warning says when the guest did not take it).
    Hot-plugged DIMMs need C(<maxMemory slots>) and a NUMA cell (domain_xml's headroom gives both) and must be
    whole multiples of 128 MiB. blockResize works for qcow2 and raw disks on virtio and SCSI buses; IDE guests do
    not see it, and the cloud kernel has no AHCI for SATA on q35."
  - "A cold resize costs a shutdown and a boot of downtime (RV(downtime_seconds)), plus the backup copy of the
    disks that change (an overlay on a cached base is small; a reflinked copy is instant)."
  - "The backups live in C(<instance_dir>/resize-backup/) until the resize is confirmed or reverted; there must
    be room for them (checked before anything is touched)."
  - "Test hook: the environment variable C(VIRTFLEET_RESIZE_FAULT), set to a step name (for example
    C(redefine) or C(start)), makes that step fail, so that tests can prove every step rolls back. Nothing else
    reads it; do not set it in production."
seealso:
  - module: virtfleet.libvirt.domain_xml
  - module: virtfleet.libvirt.domain
  - module: virtfleet.libvirt.guest_disk
"""

EXAMPLES = r"""
- name: Grow a running guest to 2 vCPUs, 1 GiB and a 20 GiB root disk, live where it can
  virtfleet.libvirt.vm_resize:
    name: web1
    vcpus: 2
    memory: 1G
    disks:
      root: 20G
  register: resized

- name: Say what happened
  ansible.builtin.debug:
    msg: "{{ resized.how }}, {{ resized.downtime_seconds }} s of downtime"

- name: Refuse anything that would need a restart
  virtfleet.libvirt.vm_resize:
    name: web1
    vcpus: 4
    mode: live

- name: Resize to a flavor, keeping the backup until a health check passed
  virtfleet.libvirt.vm_resize:
    name: web1
    flavor: m1.medium
    vcpus: "{{ flavor.vcpus }}"
    memory: "{{ flavor.memory }}"
    max_vcpus: "{{ flavor.max_vcpus | default(omit) }}"
    max_memory: "{{ flavor.max_memory | default(omit) }}"
    headroom: true
    disks:
      root: "{{ flavor.disk }}"
    confirm: false
  vars:
    flavor: {vcpus: 4, memory: 4G, disk: 40G}

- name: Check that the guest still answers
  ansible.builtin.wait_for:
    host: 192.0.2.10
    port: 22
    timeout: 120
  register: health
  ignore_errors: true

- name: Keep the new size, or go back
  virtfleet.libvirt.vm_resize:
    name: web1
    state: "{{ 'confirmed' if health is succeeded else 'reverted' }}"

- name: Resize every guest of this hypervisor in one call, two at a time
  virtfleet.libvirt.vm_resize:
    items:
      - {name: web1, vcpus: 2, memory: 2G}
      - {name: web2, vcpus: 4, memory: 4G, disks: {root: 40G}}
      - {name: db1, memory: 8G, mode: live}
    headroom: true
    batch_concurrency: 2
  register: fleet

- name: Fewer vCPUs (cold)
  virtfleet.libvirt.vm_resize:
    name: web1
    vcpus: 1
    allow_decrease: true
"""

RETURN = r"""
results:
  description:
    - With O(items), one result per guest, in the order of O(items), each with the keys below, RV(results[].item)
      (the guest's name), RV(results[].changed) and RV(results[].failed) (with RV(results[].msg) when it failed).
  returned: with O(items)
  type: list
  elements: dict
  contains:
    item:
      description: The guest's name.
      type: str
    changed:
      description: Whether this guest changed.
      type: bool
    failed:
      description: Whether this guest's resize failed.
      type: bool
    msg:
      description: Why it failed (what was rolled back included).
      type: str
      returned: when it failed
how:
  description:
    - How the resize is (or, in check mode, would be) applied; C(none) when nothing changes.
  returned: always (with O(items), in each of RV(results))
  type: str
  sample: live
plan:
  description:
    - One entry per value that changes.
  returned: always (with O(items), in each of RV(results))
  type: list
  elements: dict
  contains:
    what:
      description: C(flavor), C(vcpus), C(max_vcpus), C(memory), C(max_memory) or C(disk <target>).
      type: str
    before:
      description: The value before (vCPUs, memory as C(<MiB>M), disk size in bytes).
      type: raw
    after:
      description: The value after, in the same unit.
      type: raw
    how:
      description: C(live), C(cold) or C(offline).
      type: str
    why:
      description: Why it is applied that way.
      type: str
  sample: [{"what": "vcpus", "before": 1, "after": 2, "how": "live",
            "why": "plugged up to the <vcpu> maximum of 2"}]
steps:
  description:
    - The steps of the resize in order, for example C([prepare, set_vcpus, plug_dimms, block_resize, applied,
      confirm]) live or C([prepare, shutdown, backup, grow_disks, redefine, write_domain_xml, start, applied,
      confirm]) cold; with O(state=reverted) C([shutdown, restore, start]).
  returned: always (with O(items), in each of RV(results))
  type: list
  elements: str
downtime_seconds:
  description:
    - Seconds the guest was not running, from the shutdown request until libvirt runs it again (its operating
      system then boots, which takes the guest's own boot time on top); 0 for a live or offline resize and when
      nothing changed; null in check mode for a cold resize or revert.
  returned: always (with O(items), in each of RV(results))
  type: float
  sample: 12.4
step_seconds:
  description:
    - Seconds each step took (wall time), for example how much of a cold resize's downtime the backup and the
      disk growth cost beyond the shutdown and the start.
  returned: when the guest was resized
  type: dict
  sample: {"prepare": 0.004, "shutdown": 3.1, "backup": 0.05, "grow_disks": 0.02, "redefine": 0.03,
           "write_domain_xml": 0.002, "start": 0.6, "applied": 0.002, "confirm": 0.003}
backup:
  description: Paths of the disk backups that exist after the task (until the resize is confirmed or reverted).
  returned: always (with O(items), in each of RV(results))
  type: list
  elements: str
  sample: [/var/lib/virtfleet/instances/web1/resize-backup/disk]
resize_state:
  description:
    - State of the guest's resize record after the task (C(prepared), C(applied), C(confirmed), C(reverted)),
      null when the guest was never resized.
  returned: always (with O(items), in each of RV(results))
  type: str
  sample: confirmed
record:
  description: Path of the resize record.
  returned: always (with O(items), in each of RV(results))
  type: str
  sample: /var/lib/virtfleet/instances/web1/resize.json
state:
  description: State of the guest after the task (C(running), C(paused), C(shutoff)).
  returned: always (with O(items), in each of RV(results))
  type: str
  sample: running
reverted:
  description: With O(state=reverted), what was put back.
  returned: when a resize was reverted
  type: list
  elements: str
  sample: ["shut the guest down", "restored disk vda from its backup", "defined the old definition",
           "started the guest again"]
diff:
  description: In diff mode, the guest's C(domain.xml) (or libvirt's definition when it has none) before and after.
  returned: in diff mode
  type: dict
failed_step:
  description: The step that failed; the guest was rolled back (see RV(rolled_back)).
  returned: when the resize failed after it began
  type: str
  sample: start
rolled_back:
  description: What the automatic rollback put back after a failure.
  returned: when the resize failed after it began and the rollback succeeded
  type: list
  elements: str
  sample: ["restored disk vda from its backup", "defined the old definition", "started the guest again"]
not_undone:
  description:
    - What the rollback of a failed live resize could not undo while the guest runs (what was plugged into it,
      a disk grown live); a revert (O(state=reverted)) with a restart takes it back.
  returned: when the resize failed after it began and the rollback succeeded
  type: list
  elements: str
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import run_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import require_libvirt_and_lxml
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.core import vm_resize_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._resize.spec import MODULE_SPEC


def main() -> None:
    run_core(MODULE_SPEC, vm_resize_core, requires=[require_libvirt_and_lxml])


if __name__ == "__main__":
    main()
