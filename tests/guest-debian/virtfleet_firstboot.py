"""Take this guest's hostname and SSH keys from its config drive (OpenStack config-2), before sshd starts.

Runs on every boot and acts once per instance (the drive's uuid): a cloned disk booted as another
instance gets that instance's name and keys. Reports on the serial console with lines starting
"VFDEBIAN", so the host sees what happened without logging in. Without a config drive the guest still
boots with an SSH host key and no authorized keys.
"""

import json
import os
import pwd
import subprocess
import sys
import tempfile
import time

STATE = "/var/lib/virtfleet/instance-id"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
USERS = ("root", "debian")
DRIVE_WAIT_S = 15


def say(message):
    """One line on the console (and in the journal through stdout)."""
    line = "VFDEBIAN %s" % message
    print(line, flush=True)
    try:
        with open("/dev/ttyS0", "w") as console:
            console.write(line + "\n")
    except OSError:
        pass


def find_drive():
    """The device labelled config-2, waiting a little for udev to bring up the CD-ROM."""
    deadline = time.monotonic() + DRIVE_WAIT_S
    while True:
        found = subprocess.run(["blkid", "-t", "LABEL=config-2", "-o", "device"], capture_output=True, text=True,
                               check=False)
        devices = found.stdout.split()
        if devices:
            return devices[0]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def read_meta(device):
    """meta_data.json of the config drive on ``device`` (mounted read-only for the read)."""
    with tempfile.TemporaryDirectory() as mountpoint:
        subprocess.run(["mount", "-o", "ro", device, mountpoint], check=True)
        try:
            with open(os.path.join(mountpoint, "openstack", "latest", "meta_data.json")) as handle:
                return json.load(handle)
        finally:
            subprocess.run(["umount", mountpoint], check=False)


def set_hostname(name):
    """The hostname now and after reboots, and the 127.0.1.1 line that resolves it."""
    with open("/etc/hostname", "w") as handle:
        handle.write(name + "\n")
    subprocess.run(["hostname", name], check=True)
    try:
        with open("/etc/hosts") as handle:
            lines = [line for line in handle.read().splitlines() if not line.startswith("127.0.1.1")]
    except FileNotFoundError:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append("127.0.1.1\t%s" % name)
    with open("/etc/hosts", "w") as handle:
        handle.write("\n".join(lines) + "\n")


def install_keys(keys):
    """The drive's keys are the only authorized keys of root and of the debian user."""
    for user in USERS:
        entry = pwd.getpwnam(user)
        ssh_dir = os.path.join(entry.pw_dir, ".ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        path = os.path.join(ssh_dir, "authorized_keys")
        with open(path + ".new", "w") as handle:
            handle.write("".join(key.strip() + "\n" for key in keys))
        for item in (ssh_dir, path + ".new"):
            os.chown(item, entry.pw_uid, entry.pw_gid)
        os.chmod(path + ".new", 0o600)
        os.replace(path + ".new", path)


def ensure_host_key():
    """This guest's own host key (the image has none), announced on the console."""
    if not os.path.exists(HOST_KEY):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", HOST_KEY], check=True)
    with open(HOST_KEY + ".pub") as handle:
        say("hostkey %s" % " ".join(handle.read().split()[:2]))


def main():
    """Apply the config drive once per instance."""
    ensure_host_key()
    device = find_drive()
    if device is None:
        say("firstboot no-config-drive")
        return 0
    meta = read_meta(device)
    instance = str(meta.get("uuid", ""))
    try:
        with open(STATE) as handle:
            done = handle.read().strip() == instance
    except FileNotFoundError:
        done = False
    if done:
        say("firstboot unchanged uuid=%s" % instance)
        return 0
    keys = list((meta.get("public_keys") or {}).values())
    hostname = meta.get("hostname") or meta.get("name")
    if hostname:
        set_hostname(hostname)
    install_keys(keys)
    os.makedirs(os.path.dirname(STATE), exist_ok=True)
    with open(STATE, "w") as handle:
        handle.write(instance + "\n")
    say("firstboot applied uuid=%s hostname=%s keys=%d" % (instance, hostname, len(keys)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        # The console line is the only way the host learns why.
        say("firstboot failed %s: %s" % (type(exc).__name__, exc))
        raise
