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

# Serve the image over HTTP on loopback so the download is real. A fixed port keeps the image's URL, and so
# its cache entry, the same from one demo run to the next (a different URL is a different image).
port=${VIRTFLEET_DEMO_PORT:-18642}
if (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
  echo "port $port is busy; set VIRTFLEET_DEMO_PORT to a free port" >&2
  exit 1
fi
.venv/bin/python -m http.server --bind 127.0.0.1 --directory "$image_dir" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done

export VIRTFLEET_IMAGE_URL="http://127.0.0.1:$port/virtfleet-test-guest.img"
image_sha256=$(sha256sum "$image_dir/virtfleet-test-guest.img" | cut -d' ' -f1)
export VIRTFLEET_IMAGE_CHECKSUM="sha256:$image_sha256"
export ANSIBLE_CONFIG="$repo/ansible.cfg"

echo "== ansible-playbook playbooks/boot.yml (first run)"
.venv/bin/ansible-playbook playbooks/boot.yml
echo "== ansible-playbook playbooks/boot.yml (second run: expect changed=0)"
.venv/bin/ansible-playbook playbooks/boot.yml | sed -n '/PLAY RECAP/,$p'

echo "== what each guest reports on its serial console (its own words, then checked against its flavor)"
.venv/bin/python - <<'PY'
import os, sys, time
import yaml
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), ".build", "collections"))
from tests.support.guest_report import latest_complete
from ansible_collections.virtfleet.libvirt.plugins.module_utils._sizes import parse_size

inventory = yaml.safe_load(open("playbooks/inventory/example.yml"))
group = yaml.safe_load(open("playbooks/inventory/group_vars/guests.yml"))
root = "/var/lib/virtfleet/instances"
ok = True
for name, hostvars in inventory["all"]["children"]["guests"]["hosts"].items():
    flavor_name = hostvars["virtfleet_flavor"]
    flavor = group["virtfleet_flavors"][flavor_name]
    log = os.path.join(root, name, "console.log")
    report, text = None, ""
    for _ in range(240):
        try:
            text = open(log, "rb").read().decode("utf-8", "replace")
            report = latest_complete(text)
        except FileNotFoundError:
            pass
        if report:
            break
        time.sleep(0.25)
    print("-- %s (flavor %s: %d vCPU, %s memory, %s root disk)" % (name, flavor_name, flavor["vcpus"],
                                                                   flavor["memory"], flavor["disk"]))
    if report is None:
        print("   no report yet in %s" % log)
        ok = False
        continue
    prefix = "VFREPORT %d " % report.seq
    lines = [l[l.find("VFREPORT"):] for l in text.splitlines() if prefix in l]
    print("\n".join("   " + l for l in lines[-(len(lines)):] if l.startswith(prefix)))
    memory = parse_size(flavor["memory"])
    checks = {
        "vCPUs": report.cpus == flavor["vcpus"],
        "memory": memory - (48 << 20) <= report.mem_kib * 1024 <= memory,
        "root disk": report.disks.get("vda", {}).get("size") == parse_size(flavor["disk"]),
    }
    ok = ok and all(checks.values())
    print("   %s   console log: %s" % ("  ".join("%s %s" % (k, "ok" if v else "MISMATCH") for k, v in checks.items()), log))
sys.exit(0 if ok else 1)
PY
echo "Remove the demo guests with: .venv/bin/ansible-playbook playbooks/destroy.yml"
