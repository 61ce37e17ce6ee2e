"""molecule_create's choice of each platform's SSH port (the Python it runs on the controller)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

PLAYBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "..", "playbooks", "molecule_create.yml")


def choose(platforms, ssh_ports=None, domains=()):
    with open(PLAYBOOK) as handle:
        chooser = yaml.safe_load(handle)[0]["vars"]["virtfleet_molecule_port_chooser"]
    given = {"platforms": platforms, "ssh_ports": ssh_ports or {}, "domains": list(domains)}
    return subprocess.run([sys.executable, "-c", chooser, json.dumps(given)], capture_output=True, text=True,
                          check=False, timeout=60)


def _forwarding(name, port):
    return {"name": name, "interfaces": [{"type": "user", "port_forwards": [
        {"proto": "tcp", "address": "127.0.0.1", "host_port": port, "guest_port": 22}]}]}


def test_a_given_port_wins_then_the_existing_guests_forward_then_a_free_port():
    done = choose(["a", "b", "c"], {"c": "2222"}, [_forwarding("b", 23456), _forwarding("c", 24000)])
    assert done.returncode == 0, done.stderr
    ports = json.loads(done.stdout)
    assert ports["c"] == 2222 and ports["b"] == 23456
    assert 20000 <= ports["a"] <= 29999


def test_a_port_in_use_is_passed_over_and_two_platforms_never_share_one():
    first = json.loads(choose(["a"]).stdout)["a"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        taken.listen(1)
        again = choose(["a", "b"], domains=[_forwarding("b", first + 1)])
    assert again.returncode == 0, again.stderr
    ports = json.loads(again.stdout)
    assert ports["b"] == first + 1 and ports["a"] not in (first, first + 1), (first, ports)


@pytest.mark.parametrize("ssh_ports, message", [
    ({"a": 70000}, "platform a: ssh_port must be a port number from 1 to 65535, got 70000"),
    ({"a": "22,hostfwd=tcp::1-:1"}, "platform a: ssh_port must be a port number"),
    ({"a": True}, "platform a: ssh_port must be a port number"),
    ({"a": 2222, "b": "2222"}, "platforms a, b would share one SSH port: give each its own ssh_port"),
])
def test_bad_ports_fail_saying_which_platform(ssh_ports, message):
    done = choose(["a", "b"], ssh_ports)
    assert done.returncode == 1 and message in done.stderr, done
