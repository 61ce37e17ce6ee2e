#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: domain_info
short_description: Report libvirt domains, their definition as plain data, and their addresses
version_added: 0.1.0
description:
  - Lists the domains of a hypervisor, or one domain by name, with their state, the parsed definition
    (virt type, machine, firmware, CPU mode, virtfleet metadata), disks with their files and formats,
    interfaces with their MAC addresses, and the path of the serial console log.
  - For running guests, the IP addresses come from the DHCP leases of libvirt networks and, when the
    domain has a QEMU guest agent channel, from the guest agent. A guest agent that is not running is
    normal and simply gives no addresses.
  - Read-only; never reports a change. A domain that does not exist gives an empty RV(domains) list.
author:
  - virtfleet developers (@virtfleet)
extends_documentation_fragment:
  - virtfleet.libvirt.common.connection
  - virtfleet.libvirt.common.attributes
requirements:
  - lxml
attributes:
  diff_mode:
    support: none
    details: Nothing changes, so there is nothing to show.
  idempotent:
    support: full
    details: Read-only.
options:
  name:
    description:
      - Name of the domain to report. All domains of the hypervisor when not given.
    type: str
  include_xml:
    description:
      - Also return each domain's XML (the live definition of a running guest, else the persistent one).
    type: bool
    default: false
  ping_agent:
    description:
      - Also ask each running domain's QEMU guest agent for C(guest-ping) and report whether it answered
        (RV(domains[].agent)), for example as a health check after a resize.
      - Needs the agent's channel in the domain (domain_xml O(virtfleet.libvirt.domain_xml#module:guest_agent=true))
        and qemu-guest-agent running in the guest.
    type: bool
    default: false
  agent_timeout:
    description: Seconds to wait for each agent's answer with O(ping_agent=true).
    type: int
    default: 5
"""

EXAMPLES = r"""
- name: Read one guest
  virtfleet.libvirt.domain_info:
    name: web1
  register: web1_info

- name: Show its first address, when it has one
  ansible.builtin.debug:
    msg: "{{ web1_info.domains[0].interfaces[0].addresses[0].address | default('no address yet') }}"
  when: web1_info.domains | length > 0

- name: List every domain of the hypervisor with its XML
  virtfleet.libvirt.domain_info:
    uri: qemu:///system
    include_xml: true
  register: all_domains

- name: Is the guest agent of web1 answering?
  virtfleet.libvirt.domain_info:
    name: web1
    ping_agent: true
  register: web1_agent
  until: web1_agent.domains[0].agent.responding
  retries: 30
  delay: 2

- name: Names of the running guests
  ansible.builtin.debug:
    msg: "{{ all_domains.domains | selectattr('state', 'eq', 'running') | map(attribute='name') | list }}"
"""

RETURN = r"""
domains:
  description: The domains, sorted by name. Empty when O(name) names no domain.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the domain.
      type: str
      sample: web1
    uuid:
      description: UUID of the domain (lower case); the guest sees it as its SMBIOS system UUID.
      type: str
      sample: 3c1a1a54-5bd1-4f0c-9d0b-33e2bbf0b6f3
    state:
      description: C(running), C(paused) or C(shutoff).
      type: str
      sample: running
    persistent:
      description: Whether the domain is defined (not only transient).
      type: bool
    autostart:
      description: Whether libvirtd starts the domain when it starts.
      type: bool
    vcpus:
      description: Number of virtual CPUs the guest starts with.
      type: int
      sample: 1
    max_vcpus:
      description: Maximum number of virtual CPUs (hot-plug headroom included).
      type: int
      sample: 2
    memory_kib:
      description: Memory of the domain in KiB (1024 bytes).
      type: int
      sample: 131072
    current_memory_kib:
      description: Current (balloon) memory in KiB as defined.
      type: int
      sample: 131072
    model:
      description: The parsed definition, as plain data.
      type: dict
      contains:
        virt_type:
          description: Domain type (C(kvm) or C(qemu) for TCG).
          type: str
          sample: kvm
        arch:
          description: Guest architecture.
          type: str
          sample: x86_64
        machine:
          description: Machine type.
          type: str
          sample: pc-i440fx-7.2
        firmware:
          description: C(bios) or C(uefi).
          type: str
          sample: bios
        secure_boot:
          description: Whether UEFI secure boot is asked for.
          type: bool
        nvram:
          description: Path of the UEFI variable store, if any.
          type: str
        cpu_mode:
          description: CPU mode (C(host-model), C(host-passthrough), C(custom), C(maximum)), null when not set.
          type: str
          sample: host-model
        cpu_model:
          description: CPU model name, if one is set.
          type: str
        title:
          description: Title of the domain.
          type: str
        description:
          description: Description of the domain.
          type: str
        max_memory_kib:
          description: Maximum memory for hot-plug in KiB, if set.
          type: int
        on_poweroff:
          description: Action when the guest powers off.
          type: str
          sample: destroy
        on_reboot:
          description: Action when the guest reboots.
          type: str
          sample: restart
        on_crash:
          description: Action when the guest crashes.
          type: str
          sample: destroy
        fw_cfg:
          description: The fw_cfg entries passed to the guest (name to value).
          type: dict
          sample: {"opt/org.virtfleet/mode": "stay"}
        guest_agent:
          description: Whether the domain has a QEMU guest agent channel.
          type: bool
        metadata:
          description: The virtfleet metadata of the domain.
          type: dict
          contains:
            flavor:
              description: Flavor the guest was created from.
              type: str
              sample: m1.small
            image:
              description: Image the root disk was made from (URL without credentials).
              type: str
            owned_files:
              description: Files the collection created for this guest (removed with C(remove_storage)).
              type: list
              elements: str
    disks:
      description: Disks, CD-ROMs and floppies, in definition order.
      type: list
      elements: dict
      contains:
        target:
          description: Device name in the guest's definition.
          type: str
          sample: vda
        bus:
          description: Bus of the disk.
          type: str
          sample: virtio
        device:
          description: C(disk), C(cdrom) or C(floppy).
          type: str
          sample: disk
        type:
          description: Source type (C(file), C(block), C(network), C(volume)).
          type: str
          sample: file
        file:
          description: Path of the file or device (or C(pool/volume), or the network name); null for an empty drive.
          type: str
          sample: /var/lib/virtfleet/instances/web1/disk
        format:
          description: Image format the hypervisor uses (C(qcow2), C(raw)).
          type: str
          sample: qcow2
        readonly:
          description: Whether the disk is read-only.
          type: bool
        boot_order:
          description: Boot order of the disk, if set.
          type: int
          sample: 1
    interfaces:
      description:
        - Network interfaces, in definition order; then the user-mode NICs on QEMU's command line (those of
          M(virtfleet.libvirt.domain_xml) with O(virtfleet.libvirt.domain_xml#module:nics[].backend=qemu)), which
          libvirt does not list among its devices.
      type: list
      elements: dict
      contains:
        type:
          description: C(network), C(bridge), C(direct), C(user) or another libvirt interface type.
          type: str
          sample: network
        source:
          description: Network, bridge or host device the interface is attached to.
          type: str
          sample: default
        mac:
          description: MAC address (lower case).
          type: str
          sample: "52:54:00:3a:91:0c"
        model:
          description: NIC model.
          type: str
          sample: virtio
        target:
          description: Host-side device name of a running guest's interface.
          type: str
          sample: vnet3
        addresses:
          description:
            - IP addresses of a running guest, from DHCP leases (C(lease)) and the guest agent (C(agent)).
            - Empty for a guest that is not running or whose addresses are unknown.
          type: list
          elements: dict
          contains:
            address:
              description: The IP address.
              type: str
              sample: 192.168.122.57
            prefix:
              description: Prefix length.
              type: int
              sample: 24
            family:
              description: C(ipv4) or C(ipv6).
              type: str
              sample: ipv4
            source:
              description: Where the address comes from, C(lease) or C(agent).
              type: str
              sample: lease
            guest_ifname:
              description: Interface name inside the guest (agent addresses only).
              type: str
              sample: eth0
        port_forwards:
          description:
            - The host ports forwarded to the guest by a user-mode NIC (QEMU's C(hostfwd) or libvirt's
              C(<portForward>) for passt); empty for other NICs.
          type: list
          elements: dict
          contains:
            proto:
              description: C(tcp) or C(udp).
              type: str
              sample: tcp
            address:
              description: Host address the forward listens on (null when libvirt's definition names none).
              type: str
              sample: 127.0.0.1
            host_port:
              description: Port on the host.
              type: int
              sample: 2222
            guest_port:
              description: Port in the guest.
              type: int
              sample: 22
    console_log:
      description: File the serial console is logged to, if any.
      type: str
      sample: /var/lib/virtfleet/instances/web1/console.log
    xml:
      description: The domain XML.
      type: str
      returned: when O(include_xml=true)
    agent:
      description: Whether the guest agent answered C(guest-ping).
      type: dict
      returned: when O(ping_agent=true)
      contains:
        responding:
          description: True when the agent answered within O(agent_timeout).
          type: bool
        error:
          description: Why it did not (libvirt's words, or that the domain has no agent channel or is not running).
          type: str
      sample: {"responding": false, "error": "Guest agent is not responding: QEMU guest agent is not connected"}
"""

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import run_core
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.info import report_domains
from ansible_collections.virtfleet.libvirt.plugins.module_utils._domain.spec import DOMAIN_INFO_MODULE_SPEC
from ansible_collections.virtfleet.libvirt.plugins.module_utils._host.libvirt_conn import require_libvirt_and_lxml


def main():
    run_core(DOMAIN_INFO_MODULE_SPEC, report_domains, requires=[require_libvirt_and_lxml])


if __name__ == "__main__":
    main()
