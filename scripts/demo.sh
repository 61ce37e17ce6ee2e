#!/usr/bin/env bash
# Set up this host and run the main job: boot the example guests of playbooks/inventory/example.yml
# from the test guest image (built from Debian packages, served on 127.0.0.1), run the playbook a
# second time to show it changes nothing, and print what each guest reports about itself.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/setup-host.sh"
cd "$repo"

image_dir=/var/lib/virtfleet-demo/image
mkdir -p "$image_dir"
chmod 0755 /var/lib/virtfleet-demo
bash tests/guest/build-image.sh "$image_dir" >/dev/null

# Serve the image over HTTP on loopback so the download is real.
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/python -m http.server --bind 127.0.0.1 --directory "$image_dir" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done

export VIRTFLEET_IMAGE_URL="http://127.0.0.1:$port/virtfleet-test-guest.img"
export VIRTFLEET_IMAGE_CHECKSUM="sha256:$(sha256sum "$image_dir/virtfleet-test-guest.img" | cut -d' ' -f1)"
export ANSIBLE_CONFIG="$repo/ansible.cfg"

echo "== ansible-playbook playbooks/boot.yml (first run)"
.venv/bin/ansible-playbook playbooks/boot.yml
echo "== ansible-playbook playbooks/boot.yml (second run: expect changed=0)"
.venv/bin/ansible-playbook playbooks/boot.yml | sed -n '/PLAY RECAP/,$p'

echo "== what each guest reports on its serial console"
.venv/bin/python - <<'PY'
import os, sys, time
sys.path.insert(0, os.getcwd())
from tests.support.guest_report import latest_complete
root = "/var/lib/virtfleet/instances"
for name in ("demo-small", "demo-large"):
    log = os.path.join(root, name, "console.log")
    report = None
    for _ in range(240):
        try:
            report = latest_complete(open(log, "rb").read().decode("utf-8", "replace"))
        except FileNotFoundError:
            pass
        if report:
            break
        time.sleep(0.25)
    if report is None:
        print("%s: no report yet in %s" % (name, log)); continue
    disks = ", ".join("%s=%d MiB" % (d, v["size"] >> 20) for d, v in sorted(report.disks.items()))
    print("%-11s vCPUs=%d  MemTotal=%d MiB  disks: %s  uuid=%s" % (name, report.cpus, report.mem_kib >> 10, disks, report.uuid))
    print("            console log: %s" % log)
PY
echo "Remove the demo guests with: .venv/bin/ansible-playbook playbooks/destroy.yml"
