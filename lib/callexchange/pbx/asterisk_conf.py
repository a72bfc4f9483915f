"""Reading Asterisk's own files, for `callexchange check` and the sandbox PBX: the AMI
user's include file, asterisk.conf's directories and user, the project's dialplan, and
whether Asterisk's user may run the dialplan's hook.

pyst2's `asterisk.config` parser is used for config files: it holds up for the simple
files we ship and for asterisk.conf (it does not understand `#include` lines or
templates, so it is pointed only at our own include file, never at an admin's
manager.conf).
"""

import os

# The project's dialplan, in the checkout or the install (both keep asterisk/ beside lib/).
SHIPPED_DIALPLAN = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))), "asterisk", "extensions_callexchange.conf")
HOOK_NAME = "callexchange-webhook.agi"
# Asterisk's defaults when asterisk.conf says nothing.
DEFAULT_AGI_DIR = "/var/lib/asterisk/agi-bin"

# What asterisk/manager_callexchange.conf grants, and what the gateway needs.
NEEDED_WRITE = frozenset(("originate", "message"))
NEEDED_READ = frozenset(("call",))


def path_state(path):
    """"present", "missing", or "hidden": this user may not look into the directory
    (Asterisk's config dir is often 0750 asterisk:asterisk, and install.sh runs the check
    as the web server's user), so whether the file is there cannot be told."""
    try:
        os.stat(path)
    except PermissionError:
        return "hidden"
    except OSError:
        return "missing"
    return "present"


def manager_user_problems(path, username, secret):
    """What is wrong with the gateway's AMI user in `path` (a manager.conf include file):
    a list of ("FAIL" | "warn", sentence); [] when it matches [ami] username and secret
    and grants exactly what the gateway needs. A missing file is one problem, not an
    exception."""
    from asterisk.config import Config, ParseError

    state = path_state(path)
    if state == "missing":
        return [("FAIL", "%s does not exist" % path)]
    try:
        if state == "hidden":
            raise PermissionError(path)
        parsed = Config(path)
    except ParseError as error:
        line, reason = (error.args + (None, None))[:2]
        return [("FAIL", "%s:%s: %s" % (path, line, reason))]
    except PermissionError:
        # The file is Asterisk's (0640); the web server's user, which install.sh runs the
        # check as, may not read it. Not a fault of the setup.
        return [("warn", "%s is not readable by this user; run the check as root to "
                         "verify the AMI user" % path)]
    except OSError as error:
        return [("FAIL", "cannot read %s: %s" % (path, error.strerror))]
    sections = {category.name.strip(): category for category in parsed.categories}
    if username not in sections:
        return [("FAIL", "%s has no [%s] user (the [ami] username)" % (path, username))]
    items = {}
    for item in sections[username].items:
        items.setdefault(item.name.strip().lower(), []).append(item.value.strip())
    problems = []
    if items.get("secret", [""])[-1] != secret:
        problems.append(("FAIL", "%s: [%s] secret differs from [ami] secret"
                         % (path, username)))
    for key, needed in (("write", NEEDED_WRITE), ("read", NEEDED_READ)):
        granted = {part.strip().lower() for value in items.get(key, [])
                   for part in value.split(",")}
        missing = sorted(needed - granted)
        if missing:
            problems.append(("FAIL", "%s: [%s] %s lacks %s"
                             % (path, username, key, ",".join(missing))))
        extra = sorted(granted - needed - {""})
        if extra:
            problems.append(("warn", "%s: [%s] %s grants more than the gateway needs: %s"
                             % (path, username, key, ",".join(extra))))
    return problems


def dialplan_extensions(text):
    """{context: [extension names or patterns]} of dialplan text (`[context]` headers,
    `exten => name,priority,...` lines; comments after ';').

    >>> dialplan_extensions("[out] ; the lead\\nexten => _X!,1,NoOp()\\n same => n,Hangup()\\n")
    {'out': ['_X!']}
    """
    contexts, current = {}, None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("[") and "]" in line:
            current = line[1:line.index("]")].strip()
            contexts.setdefault(current, [])
        elif current is not None and line.lower().startswith("exten"):
            _, arrow, rest = line.partition("=>")
            if not arrow:
                _, _, rest = line.partition("=")
            name = rest.split(",", 1)[0].strip()
            if name:
                contexts[current].append(name)
    return contexts


def shipped_contexts(path=SHIPPED_DIALPLAN):
    """The contexts of the project's dialplan, in order ([] without the file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return list(dialplan_extensions(handle.read()))
    except OSError:
        return []


def asterisk_settings(path):
    """What asterisk.conf at `path` says about the AGI directory, the binaries and
    Asterisk's user: {"agi_dir": ..., "sbin_dir": ... or None, "user": ... or None
    (root), "group": ...}; None if it cannot be read (a missing file means Asterisk's
    defaults)."""
    from asterisk.config import Config, ParseError

    values = {}
    state = path_state(path)
    if state == "hidden":
        return None
    if state == "present":
        try:
            parsed = Config(path)
        except (ParseError, OSError):
            return None
        for category in parsed.categories:
            for item in category.items:
                values.setdefault((category.name.strip(), item.name.strip()),
                                  item.value.strip())
    return {"agi_dir": values.get(("directories", "astagidir")) or DEFAULT_AGI_DIR,
            "sbin_dir": values.get(("directories", "astsbindir")) or None,
            "user": values.get(("options", "runuser")) or None,
            "group": values.get(("options", "rungroup")) or None}


def _identity(user):
    """(uid, gids) of a user name (None: root). KeyError if there is no such user."""
    import grp
    import pwd

    if user in (None, "", "root"):
        return 0, {0}
    entry = pwd.getpwnam(user)
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    return entry.pw_uid, gids


def _may(path, uid, gids, bit):
    """Whether uid/gids may read (4), write (2) or execute (1) `path` by its mode."""
    info = os.stat(path)
    if uid == 0:
        # root enters and reads anything, and executes a file anyone may execute.
        return bit != 1 or os.path.isdir(path) or bool(info.st_mode & 0o111)
    if info.st_uid == uid:
        return bool(info.st_mode & (bit << 6))
    if info.st_gid in gids:
        return bool(info.st_mode & (bit << 3))
    return bool(info.st_mode & bit)


def hook_problems(agi_dir, user):
    """Why Asterisk, running as `user` (None: root), could not run the hook
    `agi_dir`/callexchange-webhook.agi: a list of sentences, [] when it can (it exists,
    is a regular file, every directory to it may be entered, it may be executed and its
    #! interpreter too)."""
    path = os.path.join(agi_dir, HOOK_NAME)
    who = user or "root"
    try:
        uid, gids = _identity(user)
    except KeyError:
        return ["Asterisk's user %r does not exist on this host" % user]
    if not os.path.exists(path):
        return ["the hook %s is missing (Asterisk's AGI directory is %s; install.sh puts "
                "it there)" % (path, agi_dir)]
    if not os.path.isfile(path):
        return ["the hook %s is not a regular file" % path]
    problems = []
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        if not _may(parent, uid, gids, 1):
            problems.append("Asterisk's user %s may not enter %s, so it cannot reach the "
                            "hook %s" % (who, parent, path))
        if parent == os.path.dirname(parent):
            break
        parent = os.path.dirname(parent)
    if not _may(path, uid, gids, 1):
        problems.append("the hook %s is not executable by Asterisk's user %s (mode %o)"
                        % (path, who, os.stat(path).st_mode & 0o7777))
    elif not _may(path, uid, gids, 4):
        problems.append("the hook %s is not readable by Asterisk's user %s, so its "
                        "interpreter cannot read it" % (path, who))
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256).decode("utf-8", "replace").strip()
    except OSError:
        return problems
    if first.startswith("#!"):
        interpreter = first[2:].split()[0] if first[2:].split() else ""
        if not os.path.isfile(interpreter):
            problems.append("the hook's interpreter %s (its #! line) does not exist"
                            % interpreter)
        elif not _may(os.path.realpath(interpreter), uid, gids, 1):
            problems.append("the hook's interpreter %s is not executable by Asterisk's "
                            "user %s" % (interpreter, who))
    return problems
