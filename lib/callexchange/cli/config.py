"""`callexchange config`: read, check and change the INI file from scripts and shells.

install.sh reads its settings through this command instead of parsing INI itself, so
the gateway, the hook, the admin and the installer all read the file the same way.

    callexchange config path                    # the file in use
    callexchange config check                   # validate: "ok" or FILE:LINE: what is wrong
    callexchange config get ami port            # one value (the default where unset)
    callexchange config get --shell --prefix CFG_ ami.host ami.port   # for sh's eval
    callexchange config set recordings base_url https://pbx1.example.com/wav-files
    callexchange config show                    # every value, secrets masked

`register(subparsers)` adds the command to the admin tool's parser. Exit status: 0 ok,
1 the config does not load (or cannot be written), 2 a section or key that does not
exist.
"""

import os
import sys

from callexchange import config as config_module

SECRET_KEYS = frozenset((("ami", "secret"), ("webhook", "secret")))

EPILOG = """\
Values are printed as written in the file, or as their default where the file does not
set them. `get` and `show` refuse a config that does not validate (its problem is
printed with file and line); with --lenient they print what the file says anyway, which
is what a script needs while an admin is half-way through an edit.

`set` changes the one line of the key (or adds it to its section, or the section at the
end of the file), checks the new value like the gateway does, and replaces the file
atomically with the same owner, group and mode; comments and every other line stay byte
for byte. A secret's value is never printed: `show` masks it, errors never quote it.

examples:
  callexchange config check
  eval "$(callexchange config get --shell --prefix CFG_ ami.host ami.port state.dir)"
  callexchange config set recordings base_url https://pbx1.example.com/wav-files
"""


class KeyNameError(Exception):
    """A section or key the schema does not know (usage error, exit 2)."""


def register(subparsers):
    """Add `config path|check|get|set|show` to an argparse subparsers object."""
    import argparse

    command = subparsers.add_parser(
        "config", help="read, check or change the config file (for scripts and admins)",
        description="Read, check or change the gateway's INI file.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = command.add_subparsers(metavar="ACTION")

    actions.add_parser("path", help="print the config file in use").set_defaults(
        handler=path_command)
    actions.add_parser("check", help="validate it; FILE:LINE: problem on failure (exit 1)"
                       ).set_defaults(handler=check_command)

    get = actions.add_parser(
        "get", help="print one value, or with --shell NAME='value' lines for sh's eval")
    get.add_argument("names", nargs="+", metavar="NAME",
                     help="SECTION KEY (one value), or SECTION.KEY ... with --shell")
    get.add_argument("--shell", action="store_true",
                     help="print SECTION_KEY='value' lines (upper-case, shell-quoted)")
    get.add_argument("--prefix", default="", help="put this before each --shell name")
    get.add_argument("--lenient", action="store_true",
                     help="print the file's values even when the config does not validate "
                          "(its problem goes to stderr)")
    get.set_defaults(handler=get_command)

    change = actions.add_parser("set", help="change one value in place (validated)")
    change.add_argument("section")
    change.add_argument("key")
    change.add_argument("value")
    change.set_defaults(handler=set_command)

    show = actions.add_parser("show", help="print every value, secrets masked")
    show.add_argument("--lenient", action="store_true",
                      help="even when the config does not validate")
    show.set_defaults(handler=show_command)
    return command


# --- the handlers ---

def path_command(args):
    print(_path(args))
    return 0


def check_command(args):
    path = _path(args)
    config_module.load_config(path)   # a ConfigError is printed by cli.main (exit 1)
    print("ok: %s" % path)
    return 0


def get_command(args):
    try:
        wanted = _parse_names(args.names, args.shell)
    except KeyNameError as error:
        print("config get: %s" % error, file=sys.stderr)
        return 2
    raw = _read(args, args.lenient)
    if not args.shell:
        section, key = wanted[0]
        print(config_module.raw_value(raw, section, key))
        return 0
    from shlex import quote
    for section, key in wanted:
        name = "%s%s_%s" % (args.prefix, section.upper(), key.upper())
        print("%s=%s" % (name, quote(config_module.raw_value(raw, section, key))))
    return 0


def show_command(args):
    raw = _read(args, args.lenient)
    print("# %s (defaults filled in; secrets masked)" % _path(args))
    for section, keys in config_module.SCHEMA.items():
        print("[%s]" % section)
        names = list(keys)
        if section == "ani":
            names += sorted(k for k in raw.get("ani", {}) if k not in keys)
        for key in names:
            value = config_module.raw_value(raw, section, key)
            if (section, key) in SECRET_KEYS and value:
                value = "***"
            print("%s = %s" % (key, value.replace("\n", "\n    ")))
        print()
    return 0


def set_command(args):
    path = _path(args)
    section, key = args.section.strip().lower(), args.key.strip().lower()
    try:
        _check_name(section, key)
    except KeyNameError as error:
        print("config set: %s" % error, file=sys.stderr)
        return 2
    try:
        check_value(section, key, args.value)
    except ValueError as error:
        print("config set: [%s] %s %s; %s not changed" % (section, key, error, path),
              file=sys.stderr)
        return 1
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        print("config set: cannot read %s: %s" % (path, error), file=sys.stderr)
        return 1
    updated = set_value(text, section, key, args.value, path)
    if updated == text:
        print("[%s] %s already has this value in %s" % (section, key, path))
        return 0
    try:
        replace_file(path, updated)
    except OSError as error:
        print("config set: cannot write %s: %s" % (path, error), file=sys.stderr)
        return 1
    print("set [%s] %s in %s" % (section, key, path))
    return 0


# --- the pieces ---

def _path(args):
    return args.config or config_module.config_path()


def _read(args, lenient):
    """parse_ini's view of the config in use; strict: only if the whole file validates."""
    path = _path(args)
    if not lenient:
        config_module.load_config(path)
        return config_module.read_raw(path)
    raw = config_module.read_raw(path)
    for problem in config_module.load_config(path, lenient=True).problems:
        print("config error (values printed anyway, --lenient): %s" % problem, file=sys.stderr)
    return raw


def _parse_names(names, shell):
    """[(section, key)] from `SECTION KEY` (one value) or `SECTION.KEY ...` (--shell)."""
    if shell:
        pairs = []
        for name in names:
            section, dot, key = name.partition(".")
            if not dot:
                raise KeyNameError("with --shell, name values as SECTION.KEY, got %r" % name)
            pairs.append((section.lower(), key.lower()))
    elif len(names) == 2:
        pairs = [(names[0].lower(), names[1].lower())]
    else:
        raise KeyNameError("give SECTION KEY (or --shell SECTION.KEY ...)")
    for section, key in pairs:
        _check_name(section, key)
    return pairs


def _check_name(section, key):
    keys = config_module.SCHEMA.get(section)
    if keys is None:
        raise KeyNameError("no section [%s] (known: %s)"
                           % (section, ", ".join(config_module.SCHEMA)))
    region_pool = section == "ani" and len(key) == 2 and key.isalpha()
    if key not in keys and not region_pool:
        raise KeyNameError("no key %r in [%s] (known: %s%s)" % (
            key, section, ", ".join(keys),
            ", or a two-letter region such as de" if section == "ani" else ""))


def check_value(section, key, value):
    """Raise ValueError (the reason, never the value of a secret) if the gateway would
    refuse `value` for `[section] key`."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("must be one line without control characters")
    if section == "ani" and key not in config_module.SCHEMA["ani"]:
        # A region's pool: caller IDs like [ani] default, or empty.
        checker, default = config_module.SCHEMA["ani"]["default"][0], ""
    else:
        checker, default = config_module.SCHEMA[section][key]
    if value or default is None:
        checker(value)


def set_value(text, section, key, value, path="<config>"):
    """`text` with `[section] key` set to `value`: its line replaced (continuation lines
    dropped), else the key added after the section's last line, else the section added
    at the end. Every other byte is kept.

    >>> set_value("[a]\\nx = 1\\n# note\\n[b]\\n", "a", "x", "2")
    '[a]\\nx = 2\\n# note\\n[b]\\n'
    >>> set_value("[a]\\nx = 1\\n\\n[b]\\ny = 1\\n", "a", "z", "3")
    '[a]\\nx = 1\\nz = 3\\n\\n[b]\\ny = 1\\n'
    >>> set_value("[a]\\nx = 1", "c", "k", "v")
    '[a]\\nx = 1\\n\\n[c]\\nk = v\\n'
    """
    raw = config_module.parse_ini(text, path)
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    entry = "%s = %s%s" % (key, value, newline)
    given = raw.get(section, {}).get(key)
    if given is not None:
        start = given[1] - 1
        end = start + 1
        while end < len(lines) and lines[end][:1] in (" ", "\t") and lines[end].strip():
            end += 1
        if lines[start].rstrip("\r\n") == entry.rstrip("\r\n") and end == start + 1:
            return text
        ending = lines[end - 1][len(lines[end - 1].rstrip("\r\n")):] or ""
        lines[start:end] = [entry.rstrip("\r\n") + ending]
        return "".join(lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    if section in raw:
        last = _section_end(lines, raw[section], section)
        lines.insert(last, entry)
        return "".join(lines)
    if lines and lines[-1].strip():
        lines.append(newline)
    lines.extend(["[%s]%s" % (section, newline), entry])
    return "".join(lines)


def _section_end(lines, keys, section):
    """Index of the line after the section's last key (and its continuations)."""
    header = next(i for i, line in enumerate(lines)
                  if line.strip().lower().replace(" ", "") == "[%s]" % section)
    last = max([header] + [line - 1 for _value, line in keys.values()])
    end = last + 1
    while end < len(lines) and lines[end][:1] in (" ", "\t") and lines[end].strip():
        end += 1
    return end


def replace_file(path, text):
    """Replace `path` by `text` atomically (statedir.atomic_file: temp file, fsync,
    rename, fsync of the directory), with the original's owner, group, mode and POSIX
    ACL (install.sh lets Asterisk's user read the config through one)."""
    from callexchange.statedir import atomic_file

    info = os.stat(path)
    owner = (info.st_uid, info.st_gid) if os.geteuid() == 0 else None
    acl = _access_acl(path)
    with atomic_file(path, mode=info.st_mode & 0o7777, owner=owner,
                     sync_directory=True) as handle:
        handle.write(text.encode("utf-8"))
        if acl is not None:
            os.setxattr(handle.fileno(), ACL_XATTR, acl)


ACL_XATTR = "system.posix_acl_access"


def _access_acl(path):
    """The file's access ACL as its extended attribute, or None (none, or no ACLs here)."""
    try:
        return os.getxattr(path, ACL_XATTR)
    except (OSError, AttributeError):
        return None
