# -*- coding: utf-8 -*-
# Copyright: virtfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to virtfleet.libvirt: where everything of a guest and of the image cache lives.

The one place that spells out the on-disk layout (Nova-like)::

    <instances_path>/_base/<name>              cached bases (image_cache, formatted ephemeral/swap bases)
    <instances_path>/_base/<name>.info.json    their records
    <instances_path>/locks/<name>.lock         one lock per cached base
    <instances_path>/locks/guest-<guest>.lock  one lock per guest (its records, its resize)
    <instances_path>/locks/build-<guest>.lock  one lock per guest for the guest module's whole build
    <instances_path>/<guest>/                  the instance directory: disk, disk.local, disk.swap,
                                               disk.config (+ .digest.json), disk.info.json, domain.xml,
                                               console.log, nvram.fd, resize.json
    <instances_path>/<guest>/resize-backup/    what an unconfirmed resize can be reverted to

and the one rule for a guest name. A guest name becomes a libvirt domain name and a directory, so it
must not climb out of the tree, smuggle anything into XML, or collide with the layout's own names.
Paths are absolute and normalised, and a guest's directory is never a symlink (a planted link would
make every module write into, or remove from, its target).
"""

from __future__ import annotations

import os
import stat as statmod
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ansible_collections.virtfleet.libvirt.plugins.module_utils._common import VirtfleetError
from ansible_collections.virtfleet.libvirt.plugins.module_utils._identifiers import FILE_NAME, GUEST_NAME

DEFAULT_INSTANCES_PATH = "/var/lib/virtfleet/instances"
BASE_DIR = "_base"
LOCK_DIR = "locks"
RECORD_SUFFIX = ".info.json"        # a cached base's record
LOCK_SUFFIX = ".lock"
GUEST_LOCK_PREFIX = "guest-"
BUILD_LOCK_PREFIX = "build-"  # not "guest-": a guest named "a.build" must not share guest "a"'s lock
DISK_INFO_FILE = "disk.info.json"   # every disk's recorded format (Nova's disk.info)
DIGEST_SUFFIX = ".digest.json"      # a config drive's content digest
DOMAIN_XML_FILE = "domain.xml"
CONSOLE_LOG = "console.log"
NVRAM_FILE = "nvram.fd"
RESIZE_RECORD = "resize.json"
RESIZE_BACKUP_DIR = "resize-backup"  # copies of the disks a cold resize changes, until it is confirmed
TEMP_MARKER = ".virtfleet-tmp-"     # temporary siblings of files being written (see _fileutil)
DISK_FILE_NAMES = {"root": "disk", "ephemeral": "disk.local", "swap": "disk.swap", "blank": "disk.blank",
                   "config_drive": "disk.config"}
# Names a guest may not take: the layout's own entries in the instances tree.
RESERVED_GUEST_NAMES = frozenset({BASE_DIR, LOCK_DIR})
# File names inside an instance directory that are the collection's records, never a disk.
RECORD_FILES = frozenset({DISK_INFO_FILE, DOMAIN_XML_FILE, RESIZE_RECORD})
DIR_MODE = 0o755  # the qemu user must traverse every directory above an image


def validate_guest_name(name: Any) -> str:
    """``name`` when it is a valid guest name, else a VirtfleetError saying what is allowed."""
    GUEST_NAME.check(name, "guest name")
    if name in RESERVED_GUEST_NAMES:
        raise VirtfleetError("invalid guest name %r: it is reserved for the instances tree's own %s directory; "
                             "choose another name" % (name, name))
    return name


def validate_disk_file_name(name: Any) -> str:
    """A disk's file name inside its instance directory: plain, and not one of the collection's records."""
    FILE_NAME.check(name, "file_name")
    if name in RECORD_FILES or name.endswith((".json", ".xml", LOCK_SUFFIX)) or TEMP_MARKER in name \
            or name in (CONSOLE_LOG, NVRAM_FILE, RESIZE_BACKUP_DIR):
        raise VirtfleetError("invalid file_name %r: it is one of the instance directory's own records or logs; "
                             "choose another name" % (name,))
    return name


def absolute_path(value: Any, what: str) -> str:
    """``value`` as an absolute, normalised path; relative or empty paths are refused (they would land in the
    playbook's working directory)."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise VirtfleetError("%s must be an absolute path, got %r" % (what, value))
    if not os.path.isabs(value):
        raise VirtfleetError("%s must be an absolute path, got %r" % (what, value))
    if "\n" in value or "\r" in value:
        raise VirtfleetError("%s must not contain line breaks" % what)
    return os.path.normpath(value)


def instances_root(value: Any) -> str:
    """The instances tree from the ``instances_path`` option (the default when not given)."""
    return absolute_path(DEFAULT_INSTANCES_PATH if value is None else value, "instances_path")


def refuse_symlinked_dir(path: str, what: str) -> None:
    """A guest's directory must be a real directory (or not exist yet), never a symlink."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise VirtfleetError("cannot inspect %s %s: %s" % (what, path, exc.strerror or exc))
    if statmod.S_ISLNK(info.st_mode):
        raise VirtfleetError("%s %s is a symbolic link (to %s); refusing to work through it. Replace it with a "
                             "real directory." % (what, path, os.readlink(path)))
    if not statmod.S_ISDIR(info.st_mode):
        raise VirtfleetError("%s %s exists and is not a directory" % (what, path))


@dataclass(frozen=True)
class CacheLayout:
    """The image cache of one instances tree."""

    instances_path: str

    @property
    def base_dir(self) -> str:
        return os.path.join(self.instances_path, BASE_DIR)

    @property
    def lock_dir(self) -> str:
        return os.path.join(self.instances_path, LOCK_DIR)

    def base(self, name: str) -> str:
        return os.path.join(self.base_dir, name)

    def record(self, name: str) -> str:
        return os.path.join(self.base_dir, name + RECORD_SUFFIX)

    def lock(self, name: str) -> str:
        return os.path.join(self.lock_dir, name + LOCK_SUFFIX)

    def paths(self, name: str) -> Dict[str, str]:
        """{base_dir, path, record, lock} of the cached base ``name``."""
        return {"base_dir": self.base_dir, "path": self.base(name), "record": self.record(name),
                "lock": self.lock(name)}

    def is_base(self, path: str) -> bool:
        """Whether ``path`` (resolved) is a file directly in this cache's base directory."""
        return os.path.dirname(os.path.realpath(path)) == os.path.realpath(self.base_dir)


def cache_layout(instances_path: Any) -> CacheLayout:
    """The cache of ``instances_path``; refused when the tree or its base directory is a file (the cache could
    never be made there: without the check, that ended in an 'internal error' NotADirectoryError)."""
    layout = CacheLayout(instances_root(instances_path))
    for path, what in ((layout.instances_path, "instances_path"), (layout.base_dir, "the image cache directory")):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise VirtfleetError("%s %s exists and is not a directory: the image cache lives in a directory %s "
                                 "inside the instances tree" % (what, path, BASE_DIR))
    return layout


@dataclass(frozen=True)
class GuestLayout:
    """Every file of one guest: its instance directory, records, logs, and its lock."""

    instances_path: str
    name: str
    instance_dir: str

    def file(self, file_name: str) -> str:
        return os.path.join(self.instance_dir, file_name)

    def disk(self, kind: str, file_name: Optional[str] = None) -> str:
        return self.file(validate_disk_file_name(file_name) if file_name else DISK_FILE_NAMES[kind])

    def digest_of(self, file_name: str) -> str:
        return self.file(file_name + DIGEST_SUFFIX)

    @property
    def disk_info(self) -> str:
        return self.file(DISK_INFO_FILE)

    @property
    def domain_xml(self) -> str:
        return self.file(DOMAIN_XML_FILE)

    @property
    def console_log(self) -> str:
        return self.file(CONSOLE_LOG)

    @property
    def nvram(self) -> str:
        return self.file(NVRAM_FILE)

    @property
    def resize_record(self) -> str:
        return self.file(RESIZE_RECORD)

    @property
    def resize_backup_dir(self) -> str:
        return self.file(RESIZE_BACKUP_DIR)

    def resize_backup(self, file_name: str) -> str:
        """Where a resize keeps the copy of disk ``file_name`` (or of ``domain.xml``) until it is confirmed."""
        return os.path.join(self.resize_backup_dir, file_name)

    @property
    def lock(self) -> str:
        return os.path.join(self.instances_path, LOCK_DIR, GUEST_LOCK_PREFIX + self.name + LOCK_SUFFIX)

    @property
    def build_lock(self) -> str:
        """Held by the guest module from the image to the domain: two runs building one guest at once would each
        write its domain XML (another UUID) and define it."""
        return os.path.join(self.instances_path, LOCK_DIR, BUILD_LOCK_PREFIX + self.name + LOCK_SUFFIX)

    @property
    def cache(self) -> CacheLayout:
        return CacheLayout(self.instances_path)

    def in_tree(self) -> bool:
        """Whether the instance directory is the default one under the instances tree."""
        return self.instance_dir == os.path.join(self.instances_path, self.name)

    def check_writable(self) -> None:
        """Refuse to write through a symlinked instance directory."""
        refuse_symlinked_dir(self.instance_dir, "the instance directory of guest %s" % self.name)

    def owns(self, path: str) -> bool:
        """Whether ``path`` is a file directly inside this guest's instance directory, reached without any
        symlink (the directory itself or the file being one)."""
        if not isinstance(path, str) or not os.path.isabs(path):
            return False
        path = os.path.normpath(path)
        if os.path.dirname(path) != self.instance_dir:
            return False
        try:
            if statmod.S_ISLNK(os.lstat(self.instance_dir).st_mode):
                return False
        except OSError:
            return False
        real_dir = os.path.realpath(self.instance_dir)
        return os.path.realpath(path) == os.path.join(real_dir, os.path.basename(path))


def guest_layout(instances_path: Any, name: Any, instance_dir: Any = None) -> GuestLayout:
    """The layout of guest ``name``; ``instance_dir`` overrides ``<instances_path>/<name>``."""
    root = instances_root(instances_path)
    name = validate_guest_name(name)
    directory = os.path.join(root, name) if instance_dir in (None, "") \
        else absolute_path(instance_dir, "instance_dir")
    return GuestLayout(root, name, directory)
