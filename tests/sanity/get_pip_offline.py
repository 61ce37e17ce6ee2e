"""Stand-in for the pip bootstrap script ansible-test downloads from ci-files.testing.ansible.com.

That host is unreachable here (only package registries are), so scripts/sanity.sh puts this file
where ansible-test caches the script. Like get-pip.py it takes `pip install` arguments: it seeds
pip with the interpreter's own ensurepip, then lets pip install the requested packages from PyPI.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
