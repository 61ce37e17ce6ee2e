#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: domain_xml
short_description: Write a guest's libvirt domain XML from a few high-level parameters
version_added: 0.1.0
description:
  - Renders the domain definition of one guest and writes it to C(<instance_dir>/domain.xml), where
    M(virtfleet.libvirt.domain) reads it. Nothing is defined in libvirt by this module.
  - "Defaults: virtio disks and NICs, a serial console logged to C(<instance_dir>/console.log),
    C(host-model) CPU on KVM (libvirt's default CPU on TCG), BIOS firmware, no graphics, a virtio RNG."
  - The output is deterministic and written atomically only when its content changes. The UUID stays
    stable across runs; when O(uuid) is not given it is taken from the existing file, else from a defined
    domain of that name, else generated. MAC addresses are derived from the guest name and NIC index.
  - An unchanged re-run skips rendering. A digest of the options, libvirt's answers and this module's code
    is kept in the C(user.virtfleet.domain_xml) extended attribute of the written file; any difference, an
    edited file or a filesystem without user extended attributes means a full render.
  - The machine type is resolved to libvirt's canonical name (for example C(pc) to C(pc-i440fx-7.2)) so
    that the file equals what libvirt stores.
  - A user-mode NIC (O(nics[].type=user)) is by default QEMU's own isolated user networking on the domain's
    C(<qemu:commandline>), which libvirt reports as a taint (C(custom-argv)); see O(nics[].backend).
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.connection
  - virtfleet.libvirt.common.instances
  - virtfleet.libvirt.common.attributes
  - virtfleet.libvirt.items.domain_xml
options:
  name:
    description:
      - Name of the guest (1-64 letters, digits, C(.), C(_) or C(-), starting with a letter or digit).
      - Required, unless O(items) lists the guests.
    type: str
  path:
    description: File to write. Defaults to C(<instance_dir>/domain.xml).
    type: path
  instance_dir:
    description: The guest's directory. Defaults to C(<instances_path>/<name>).
    type: path
  uuid:
    description: UUID of the domain. See the description for how it is kept when not given.
    type: str
  title:
    description: Short title (one line), shown by C(virsh list --title).
    type: str
  description:
    description: Free-form description.
    type: str
  vcpus:
    description: Number of virtual CPUs the guest starts with.
    type: int
    default: 1
  max_vcpus:
    description:
      - Maximum number of virtual CPUs (for hot-plug, see M(virtfleet.libvirt.vm_resize)). Without it, O(vcpus)
        (no vCPU headroom), or the headroom default with O(headroom=true).
    type: int
  memory:
    description:
      - Memory of the guest, a whole number of MiB. A size with a binary unit (C(160M), C(2G), C(512MiB)); a number
        without a unit is bytes, as for every size of this collection (C(536870912) is 512 MiB, C(512) is refused).
    type: raw
    default: 512M
  max_memory:
    description:
      - Maximum memory for hot-plug, same format as O(memory). The guest gets C(<maxMemory>) with
        O(max_memory_slots) slots and one NUMA cell, so that memory can later be added while it runs (DIMMs or
        virtio-mem up to this size).
      - Without it, no memory headroom, or the headroom default with O(headroom=true). See O(headroom) for what
        headroom costs.
    type: raw
  max_memory_slots:
    description:
      - Number of memory slots for devices hot-plugged up to O(max_memory) (1 to 255). Needs O(max_memory) or
        O(headroom=true).
      - Defaults to 16 when the guest has memory headroom.
    type: int
  headroom:
    description:
      - Give the guest hot-plug headroom, so that M(virtfleet.libvirt.vm_resize) can later grow its vCPUs and
        memory while it runs. Defaults for O(max_vcpus) and O(max_memory) when they are not given; a given
        maximum always wins.
      - The default maximum is twice O(vcpus) (at most the host's logical CPUs) and twice O(memory) (at most the
        host's memory); a maximum that would leave no room (a 2-vCPU guest on a 2-CPU host) gives none.
      - A maximum changes only when the guest restarts. So once the definition file has headroom, its maxima
        are kept while they still cover the flavor (a guest grown live keeps them, and a re-run after
        M(virtfleet.libvirt.vm_resize) changes nothing); a flavor above them gets the default again.
      - "What it costs, measured with the test guest (Linux 6.1, i440fx, TCG): on the host nothing up front
        (QEMU reserves address space; RAM is allocated when memory is plugged and used). In the guest, memory
        headroom of any size takes about 65 MiB of its RAM (MemTotal 223612 KiB without and 157308 KiB with
        for 256 MiB; 996604 and 930300 KiB for 1 GiB with a maximum of 2 GiB or 8 GiB alike): Linux sets up
        its 64 MiB SWIOTLB bounce buffer as soon as memory can reach above 4 GiB, where hot-plugged memory
        goes. A guest whose RAM reaches above 4 GiB already pays that. vCPU headroom takes about 280 KiB per
        extra possible vCPU (per-CPU areas). A small guest that only needs to grow vCPUs live can leave
        O(headroom) off and give O(max_vcpus) alone."
    type: bool
    default: false
  virt_type:
    description:
      - Domain type. C(auto) uses KVM only when it is known to run guests on this host, else C(qemu) (TCG).
    type: str
    default: auto
    choices: [kvm, qemu, auto]
  machine:
    description: Machine type or alias, such as C(pc) (i440fx) or C(q35).
    type: str
    default: pc
  cpu_mode:
    description:
      - CPU mode. Default C(host-model) with KVM; with C(qemu) libvirt's default CPU model.
    type: str
    choices: [host-model, host-passthrough, maximum, custom]
  cpu_model:
    description: CPU model for O(cpu_mode=custom), for example C(Skylake-Client).
    type: str
  firmware:
    description:
      - C(bios) (SeaBIOS) or C(uefi) (OVMF from the C(ovmf) package; its variable store is kept in
        C(<instance_dir>/nvram.fd)).
    type: str
    default: bios
    choices: [bios, uefi]
  secure_boot:
    description: With O(firmware=uefi), use the Secure Boot capable OVMF build (needs O(machine=q35)).
    type: bool
    default: false
  graphics:
    description: Graphical console. C(none) leaves only the serial console.
    type: str
    default: none
    choices: [none, vnc, spice]
  graphics_listen:
    description: Address the graphical console listens on.
    type: str
    default: 127.0.0.1
  guest_agent:
    description: Add the virtio channel used by the QEMU guest agent.
    type: bool
    default: false
  rng:
    description: Add a virtio random number generator fed from the host's C(/dev/urandom).
    type: bool
    default: true
  tpm:
    description:
      - Add an emulated TPM 2.0 (C(<tpm><backend type='emulator' version='2.0'/></tpm>)). libvirt runs
        C(swtpm) for it (the C(swtpm) and C(swtpm-tools) packages) and keeps its state in
        C(/var/lib/libvirt/swtpm/<uuid>), which M(virtfleet.libvirt.domain) removes with O(virtfleet.libvirt.domain#module:state=absent).
      - C(swtpm) runs as the C(swtpm_user) of C(/etc/libvirt/qemu.conf) (default C(tss)), which must be able to write
        C(/var/lib/swtpm-localca); when it cannot, starting the guest fails with the reason from swtpm's log.
    type: bool
    default: false
  tpm_model:
    description: Interface of the TPM with O(tpm=true). C(tpm-crb) suits UEFI guests.
    type: str
    default: tpm-tis
    choices: [tpm-tis, tpm-crb]
  watchdog:
    description:
      - Watchdog device. C(i6300esb) is a PCI watchdog for any machine; C(itco) is the q35 chipset's own
        (fails on other machines, and needs libvirt 9.1 or later). C(none) adds none.
    type: str
    default: none
    choices: [none, i6300esb, itco]
  watchdog_action:
    description: What the hypervisor does when the watchdog fires (with O(watchdog) other than C(none)).
    type: str
    default: reset
    choices: [reset, shutdown, poweroff, pause, none, dump, inject-nmi]
  memballoon:
    description:
      - C(true) leaves the memory balloon to libvirt, which adds a virtio balloon (nothing is written for it).
      - C(false) writes C(<memballoon model='none'/>), a guest without a balloon device.
    type: bool
    default: true
  kernel:
    description: Kernel for direct kernel boot (a path on the hypervisor).
    type: path
  initrd:
    description: Initrd for direct kernel boot.
    type: path
  cmdline:
    description: Kernel command line for direct kernel boot.
    type: str
  fw_cfg:
    description:
      - Entries exposed to the guest through QEMU's fw_cfg (C(/sys/firmware/qemu_fw_cfg/by_name/) in Linux).
      - Names must start with C(opt/), for example C(opt/org.example/role).
    type: dict
  disks:
    description: Disks and cdroms, in order.
    type: list
    elements: dict
    suboptions:
      path:
        description: Image file on the hypervisor. Required except for an empty cdrom.
        type: path
      format:
        description: Image format.
        type: str
        default: raw
        choices: [raw, qcow2]
      device:
        description: Kind of device.
        type: str
        default: disk
        choices: [disk, cdrom]
      bus:
        description:
          - Bus. Default C(virtio) for disks; for cdroms C(ide) on i440fx machines and C(scsi) (with a
            virtio-scsi controller) on q35.
        type: str
        choices: [virtio, scsi, sata, ide, usb]
      dev:
        description: Target device name (C(vda), C(sdb), C(hdc)). Assigned per bus when not given.
        type: str
      readonly:
        description: Attach read-only. Default true for cdroms, false for disks.
        type: bool
      boot_order:
        description: Boot priority (1 first). When any device has one, only those devices boot.
        type: int
      cache:
        description: Host cache mode.
        type: str
        choices: [none, writethrough, writeback, directsync, unsafe, default]
      io:
        description: I/O mode.
        type: str
        choices: [native, threads, io_uring]
      discard:
        description: Pass discard (TRIM) requests to the image (C(unmap)) or not.
        type: str
        choices: [unmap, ignore]
      serial:
        description: Serial number the guest sees (C(/dev/disk/by-id/virtio-<serial>)).
        type: str
  nics:
    description:
      - Network interfaces, in order. Give O(nics[].type) and O(nics[].source), or one of
        O(nics[].network), O(nics[].bridge), O(nics[].direct) as a shorthand.
    type: list
    elements: dict
    suboptions:
      type:
        description:
          - Kind of attachment. Defaults to C(network) (unless a shorthand names it).
          - C(user) is user-mode networking, with no source and no host network or bridge involved; the host
            reaches the guest only through O(nics[].port_forwards). How it is made is O(nics[].backend).
          - Not together with the shorthands O(nics[].network), O(nics[].bridge), O(nics[].direct).
        type: str
        choices: [network, bridge, direct, user]
      source:
        description: The libvirt network, host bridge or host interface. Default C(default) for networks.
        type: str
      network:
        description: Shorthand for O(nics[].type=network) with this source.
        type: str
      bridge:
        description: Shorthand for O(nics[].type=bridge) with this source.
        type: str
      direct:
        description: Shorthand for O(nics[].type=direct) (macvtap) on this host interface.
        type: str
      mode:
        description: macvtap mode of a direct interface (only for those). Defaults to C(bridge).
        type: str
        choices: [bridge, vepa, private, passthrough]
      mac:
        description: MAC address. Default C(52:54:00:) followed by 3 bytes of sha256(C(<name>:<index>)).
        type: str
      model:
        description: NIC model.
        type: str
        default: virtio
        choices: [virtio, e1000, e1000e, rtl8139]
      boot_order:
        description: Boot priority, as for disks.
        type: int
      backend:
        description:
          - How a O(nics[].type=user) NIC is made (only for those). Defaults to C(auto), which is C(qemu).
          - C(qemu) gives the NIC to QEMU's own user networking, through the domain's C(<qemu:commandline>)
            (C(-netdev user,restrict=on,hostfwd=...) and a C(-device) with the NIC's MAC). It works with every
            libvirt, Debian 12's 9.0.0 included, which is built without passt and silently ignores
            C(<portForward>) without it.
          - "With C(qemu) the guest is isolated (C(restrict=on)): it gets 10.0.2.15 by DHCP from QEMU but reaches
            nothing, not the host, not its 10.0.2.2 gateway, no network beyond; so it has no outbound network (no
            package mirrors, no DNS). Only connections to the O(nics[].port_forwards) come in. That keeps test
            traffic on the host's loopback, and a guest that cannot reach out cannot attack the host's services."
          - With C(qemu) libvirt does not know the NIC; it is on a PCI slot of the root bus kept for it, one per
            such NIC in O(nics) order, C(0x1f), C(0x1e), C(0x1d), C(0x1c) on i440fx (O(machine=pc)), and C(0x1c),
            C(0x1b), C(0x19), C(0x18) on q35 (whose C(0x1f) holds the chipset, C(0x1e) and C(0x1d) what libvirt
            may put there). At most 4 such NICs; other machine types, O(nics[].boot_order) and IPv6 forward
            addresses are refused. libvirt marks such a domain tainted (C(custom-argv)) in its log and
            C(virsh dominfo); that is expected. The forwards stay across restarts; a change of them applies at the
            next start (M(virtfleet.libvirt.domain) with O(virtfleet.libvirt.domain#module:apply=restart)).
          - C(passt) writes libvirt's C(<interface type='user'>) with C(<backend type='passt'/>) and
            C(<portForward>), for a libvirt built with passt (and the passt package installed). The guest then gets
            the host's addresses and reaches what the host reaches. Debian 12's libvirt refuses it at define.
        type: str
        choices: [auto, qemu, passt]
      port_forwards:
        description:
          - With O(nics[].type=user), host ports that reach the guest (QEMU or passt listens on them while the
            guest runs). This is how the host reaches such a guest, e.g. C(ssh -p 2222 debian@127.0.0.1) on the
            hypervisor for O(nics[].port_forwards[].host_port=2222) and O(nics[].port_forwards[].guest_port=22).
          - A host port must be free when the guest starts (QEMU does not start otherwise); each forward of one
            NIC needs its own O(nics[].port_forwards[].host_port), and two guests cannot share one.
        type: list
        elements: dict
        suboptions:
          host_port:
            description: Port on the host (1 to 65535).
            type: int
            required: true
          guest_port:
            description: Port in the guest the connections go to. Defaults to O(nics[].port_forwards[].host_port).
            type: int
          address:
            description:
              - Host address the forward listens on. The default keeps the guest reachable from the host only.
              - An IPv4 address with O(nics[].backend=qemu).
            type: str
            default: 127.0.0.1
          proto:
            description: Protocol.
            type: str
            default: tcp
            choices: [tcp, udp]
  extra_devices:
    description:
      - Further devices as libvirt XML fragments, one element each (for example a C(<hostdev>)), added as written.
    type: list
    elements: str
  metadata:
    description: Facts recorded in the domain's virtfleet metadata.
    type: dict
    suboptions:
      flavor:
        description: Name of the flavor the guest was built from.
        type: str
      image:
        description: Image the root disk was made from.
        type: str
      owned_files:
        description: Files created for this guest, deleted by M(virtfleet.libvirt.domain) with C(remove_storage).
        type: list
        elements: path
"""

EXAMPLES = r"""
- name: Write the definition of a small guest
  virtfleet.libvirt.domain_xml:
    name: web1
    vcpus: 2
    memory: 1G
    disks:
      - path: /var/lib/virtfleet/instances/web1/disk
        format: qcow2
    nics:
      - network: default
      # reachable from the hypervisor itself only, at 127.0.0.1:2222; the guest reaches nothing
      - type: user
        port_forwards:
          - host_port: 2222
            guest_port: 22
    fw_cfg:
      opt/org.virtfleet/role: web
    metadata:
      flavor: m1.small
      owned_files:
        - /var/lib/virtfleet/instances/web1/disk
  register: web1_xml

- name: Define and start it
  virtfleet.libvirt.domain:
    name: web1
    xml_file: "{{ web1_xml.path }}"

- name: A UEFI guest on q35 with an installer cdrom
  virtfleet.libvirt.domain_xml:
    name: efi1
    machine: q35
    firmware: uefi
    memory: 2G
    disks:
      - path: /var/lib/virtfleet/instances/efi1/disk
        format: qcow2
        boot_order: 2
      - path: /var/lib/virtfleet/iso/installer.iso
        device: cdrom
        boot_order: 1

- name: A guest with a TPM 2.0, the q35 watchdog powering it off, and no memory balloon
  virtfleet.libvirt.domain_xml:
    name: sec1
    machine: q35
    firmware: uefi
    tpm: true
    tpm_model: tpm-crb
    watchdog: itco          # libvirt 9.1 or later; i6300esb works everywhere
    watchdog_action: poweroff
    memballoon: false
    disks:
      - path: /var/lib/virtfleet/instances/sec1/disk
        format: qcow2
"""

RETURN = r"""
results:
  description:
    - With O(items), one result per element, in order, with the keys below plus C(item) (the element's O(name)),
      C(failed) and, for a failed element, C(msg).
  returned: with O(items)
  type: list
  elements: dict
path:
  description: The file written (or, in check mode, that would be written).
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: /var/lib/virtfleet/instances/web1/domain.xml
xml:
  description: The domain XML.
  returned: always (with O(items), in each element of RV(results))
  type: str
uuid:
  description: UUID in the XML.
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: 3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3
virt_type:
  description: Domain type used (C(auto) resolved).
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: qemu
machine:
  description: Canonical machine type as libvirt names it.
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: pc-i440fx-7.2
macs:
  description: MAC addresses of the NICs, in the order of O(nics) (user NICs on QEMU's command line included).
  returned: always (with O(items), in each element of RV(results))
  type: list
  elements: str
  sample: ["52:54:00:1a:2b:3c"]
owned_files:
  description:
    - The files this guest has because of this definition, which belong to it alone. These are the definition
      file, its serial console log and, with O(firmware=uefi), its UEFI variable store.
  returned: always (with O(items), in each element of RV(results))
  type: list
  elements: str
  sample: [/var/lib/virtfleet/instances/web1/domain.xml, /var/lib/virtfleet/instances/web1/console.log]
console_log:
  description: Where the guest's serial console is logged (C(<instance_dir>/console.log)).
  returned: always (with O(items), in each element of RV(results))
  type: str
  sample: /var/lib/virtfleet/instances/web1/console.log
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import run_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_XML_MODULE_SPEC
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.xml_file import domain_xml_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import require_libvirt


def main():
    # lxml is checked where it is needed: a re-run that finds its record does not load it.
    run_core(DOMAIN_XML_MODULE_SPEC, domain_xml_core, requires=[require_libvirt])


if __name__ == "__main__":
    main()
