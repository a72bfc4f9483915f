"""The host checks' snapshot of an install: `python3 .ci/snapshot.py MANIFEST [PATH...]`.

One line per thing install.sh made (from its manifest) and per PATH given: type, mode,
owner, and sha256 or link target; trees are walked, kept dirs (data) only stat'ed; ACLs
as getfacl prints them; the names in Apache's mods-, conf- and sites-enabled. Two runs
that changed nothing print the same lines.
"""
import hashlib
import os
import stat
import subprocess
import sys


def describe(path):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "%s missing" % path
    owner = "%o %d:%d" % (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    if stat.S_ISLNK(info.st_mode):
        return "%s link %s -> %s" % (path, owner, os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return "%s dir %s" % (path, owner)
    with open(path, "rb") as handle:
        return "%s file %s %s" % (path, owner, hashlib.sha256(handle.read()).hexdigest())


def snapshot(manifest, extra_paths):
    lines = [describe(manifest)]
    with open(manifest, encoding="utf-8") as handle:
        entries = handle.read().splitlines()
    for raw in entries:
        if raw.startswith("#") or not raw.strip():
            continue
        kind, path, *_ = raw.split("\t")
        if kind == "tree":
            for top, dirs, files in os.walk(path):
                dirs.sort()
                lines.append(describe(top))
                lines.extend(describe(os.path.join(top, name)) for name in sorted(files))
        elif kind in ("file", "link", "keep", "include"):
            lines.append(describe(path))
        elif kind == "acl":
            acl = subprocess.run(["getfacl", "--omit-header", "--absolute-names", path],
                                 capture_output=True, text=True, check=False).stdout
            lines.append("%s acl %s" % (path, " ".join(acl.split())))
        elif kind == "apache-conf":
            lines.append(describe("/etc/apache2/conf-enabled/%s.conf" % path))
    lines.extend(describe(path) for path in extra_paths)
    for directory in ("/etc/apache2/mods-enabled", "/etc/apache2/conf-enabled",
                      "/etc/apache2/sites-enabled"):
        lines.append("%s: %s" % (directory, " ".join(sorted(os.listdir(directory)))))
    return lines


if __name__ == "__main__":
    print("\n".join(snapshot(sys.argv[1], sys.argv[2:])))
