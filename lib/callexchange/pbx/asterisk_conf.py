"""Reading Asterisk's own config files, for `callexchange check`.

pyst2's `asterisk.config` parser is used here: it holds up for the simple files we ship
(it does not understand `#include` lines or templates, so it is pointed only at our own
include file, never at an admin's manager.conf).
"""

import os

# What asterisk/manager_callexchange.conf grants, and what the gateway needs.
NEEDED_WRITE = frozenset(("originate", "message"))
NEEDED_READ = frozenset(("call",))


def manager_user_problems(path, username, secret):
    """What is wrong with the gateway's AMI user in `path` (a manager.conf include file):
    a list of ("FAIL" | "warn", sentence); [] when it matches [ami] username and secret
    and grants exactly what the gateway needs. A missing file is one problem, not an
    exception."""
    from asterisk.config import Config, ParseError

    if not os.path.exists(path):
        return [("FAIL", "%s does not exist" % path)]
    try:
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
