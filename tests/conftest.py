"""Make the checkout importable as ``ansible_collections.virtfleet.libvirt``.

scripts/setup-host.sh links the checkout at .build/collections/ansible_collections/virtfleet/libvirt;
this conftest creates the same link when it is missing so that unit tests run from a bare checkout.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".build", "collections")
_link = os.path.join(COLLECTIONS, "ansible_collections", "virtfleet", "libvirt")
if not os.path.lexists(_link):
    os.makedirs(os.path.dirname(_link), exist_ok=True)
    os.symlink("../../../..", _link)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
