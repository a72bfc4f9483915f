"""What `callexchange check` asks of the PBX: is each piece the gateway needs in place?

* over AMI, as the gateway's own user: the login, and ListCommands, which lists Originate
  and MessageSend only if the user may use them (write=originate,message);
* as a local admin, through Asterisk's console (`asterisk -rx`, open to root and
  Asterisk's user): the dialplan contexts loaded, the channel technologies of
  [dial] agent_channel and lead_channel and the message technology of message_to, the
  AMI user's read and write privileges as Asterisk loaded them, and whether Asterisk's
  user may run the dialplan's hook in its AGI directory;
* without the console, what asterisk.conf says (the AGI directory and user) for the
  hook, and a warning naming what could not be checked.

Each function returns (level, sentence) lines, level "ok", "warn" or "FAIL".
"""

import os
import re

from callexchange.pbx import ami
from callexchange.pbx.asterisk_cli import (AsteriskConsole, ConsoleUnavailable, find_binary,
                                           module_running, parse_channel_types,
                                           parse_contexts, parse_manager_user,
                                           parse_settings)
from callexchange.pbx.asterisk_conf import (DEFAULT_AGI_DIR, asterisk_settings,
                                            hook_problems, shipped_contexts)

# What the gateway's calls need the AMI user to be allowed (ListCommands lists these).
NEEDED_ACTIONS = (("Originate", "originate"), ("MessageSend", "message"))
NEEDED_READ = "call"
# The module that gives Asterisk each message technology of [dial] message_to.
MESSAGE_MODULES = {"pjsip": "res_pjsip_messaging.so", "xmpp": "res_xmpp.so"}
_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")
_MANAGER_FILE = "asterisk/manager_callexchange.conf"


def ami_lines(ami_settings):
    """Log in as the gateway's AMI user and list what it may use."""
    target = "%s:%d as %s" % (ami_settings.host, ami_settings.port, ami_settings.username)
    try:
        banner, actions = ami.probe(ami_settings)
    except ami.AmiError as error:
        return [("FAIL", "ami: %s: %s" % (target, error.detail))]
    lines = [("ok", "ami: logged in to %s (%s)" % (target, banner))]
    missing = [(action, privilege) for action, privilege in NEEDED_ACTIONS
               if action not in actions]
    for action, privilege in missing:
        lines.append(("FAIL", "ami: the AMI user %s may not use %s (ListCommands does not "
                              "list it): its write= lacks %s (%s has write = "
                              "originate,message)" % (ami_settings.username, action,
                                                      privilege, _MANAGER_FILE)))
    if not missing:
        lines.append(("ok", "ami: the AMI user may use Originate and MessageSend"))
    return lines


def needed_contexts(dial):
    """The dialplan contexts the gateway's calls run: [dial] outbound_context and
    agent_context, and every context of the project's dialplan (its contexts call each
    other, and the gateway's Originate pushes callexchange-agent-unanswered)."""
    names = [dial.outbound_context, dial.agent_context] + shipped_contexts()
    return list(dict.fromkeys(names))


def _technology(template, separator):
    return template.partition(separator)[0].strip()


def console_for(binary=None, asterisk_etc=None):
    """The AsteriskConsole to ask, or None when this host has no asterisk binary.
    `asterisk_etc`: Asterisk's config dir (its asterisk.conf is passed with -C)."""
    found = find_binary(binary)
    if found is None and asterisk_etc:
        # A source build outside PATH (e.g. /opt/asterisk-22/sbin): its asterisk.conf
        # names where its binaries are, as install.sh reads it too.
        conf = asterisk_settings(os.path.join(asterisk_etc, "asterisk.conf")) or {}
        if conf.get("sbin_dir"):
            candidate = os.path.join(conf["sbin_dir"], "asterisk")
            found = candidate if os.access(candidate, os.X_OK) else None
    if found is None:
        return None
    config_file = None
    if asterisk_etc and os.path.exists(os.path.join(asterisk_etc, "asterisk.conf")):
        config_file = os.path.join(asterisk_etc, "asterisk.conf")
    return AsteriskConsole(found, config_file)


def local_lines(settings, console, asterisk_etc):
    """What the local Asterisk has loaded, through its console (see the module
    docstring); `console` None: this host has no asterisk binary (nothing is said when
    it has no Asterisk config dir either: a host without Asterisk, e.g. the sandbox's)."""
    if console is None:
        if not (asterisk_etc and os.path.isdir(asterisk_etc)):
            return []
        return [("warn", "asterisk: no asterisk binary on this host, so the dialplan, the "
                         "hook and the channel technologies were not checked (check "
                         "--asterisk PATH names one)")]
    try:
        info = parse_settings(console.run("core show settings"))
    except ConsoleUnavailable as error:
        lines = [("warn", "asterisk: could not ask Asterisk (%s): not checked whether the "
                          "dialplan contexts, the channel technologies of agent_channel, "
                          "lead_channel and message_to, and the AMI user's privileges are "
                          "loaded; run callexchange check as root or as Asterisk's user"
                          % error.reason)]
        conf_path = os.path.join(asterisk_etc or "/etc/asterisk", "asterisk.conf")
        try:
            conf = asterisk_settings(conf_path)
        except PermissionError:
            conf = None
        if conf is None:
            lines.append(("warn", "asterisk: the hook was not checked either: %s cannot be "
                                  "read by this user" % conf_path))
            return lines
        return lines + hook_lines(conf["agi_dir"], conf["user"])
    lines = []
    try:
        lines += context_lines(settings, console)
        lines += technology_lines(settings, console)
        lines += manager_lines(settings, console)
    except ConsoleUnavailable as error:
        lines.append(("warn", "asterisk: stopped asking Asterisk: %s" % error.reason))
    user = info.get("User name and group", "").partition("/")[0].strip() or None
    lines += hook_lines(info.get("AGI Scripts directory") or DEFAULT_AGI_DIR, user)
    return lines


def context_lines(settings, console):
    loaded = parse_contexts(console.run("dialplan show"))
    missing = [name for name in needed_contexts(settings.dial) if name not in loaded]
    if not missing:
        return [("ok", "asterisk: the dialplan's contexts are loaded (%s, ...)"
                       % settings.dial.outbound_context)]
    return [("FAIL", "asterisk: dialplan context %s is not loaded (is "
                     "extensions_callexchange.conf #included from extensions.conf? then "
                     "asterisk -rx 'dialplan reload')" % name) for name in missing]


def technology_lines(settings, console):
    lines = []
    loaded = parse_channel_types(console.run("core show channeltypes"))
    known = {name.lower() for name in loaded}
    for key in ("agent_channel", "lead_channel"):
        technology = _technology(getattr(settings.dial, key), "/")
        if technology.lower() not in known:
            lines.append(("FAIL", "asterisk: [dial] %s dials channel technology %s, which "
                                  "Asterisk has not loaded (loaded: %s)"
                                  % (key, technology, ", ".join(sorted(loaded)) or "none")))
    technology = _technology(settings.dial.message_to, ":").lower()
    module = MESSAGE_MODULES.get(technology)
    if module is None:
        lines.append(("warn", "asterisk: [dial] message_to uses message technology %s, "
                              "which check does not know; not checked" % technology))
    elif not module_running(console.run("module show like %s" % module), module):
        lines.append(("FAIL", "asterisk: [dial] message_to sends with message technology "
                              "%s, but Asterisk has not loaded %s (msg would never reach "
                              "the softphone)" % (technology, module)))
    if not lines:
        lines.append(("ok", "asterisk: channel technologies %s and %s and message "
                            "technology %s are loaded"
                            % (_technology(settings.dial.agent_channel, "/"),
                               _technology(settings.dial.lead_channel, "/"), technology)))
    return lines


def manager_lines(settings, console):
    username = settings.ami.username
    if not _NAME.match(username):
        return [("warn", "asterisk: the AMI user's privileges were not checked (its name "
                         "%r cannot be passed to the console)" % username)]
    user = parse_manager_user(console.run("manager show user %s" % username))
    if not user:
        return [("FAIL", "asterisk: Asterisk has no AMI user %s (is manager_callexchange.conf "
                         "#included from manager.conf? then asterisk -rx 'manager reload')"
                         % username)]
    lines = []
    read = {part.strip() for part in user.get("read perm", "").split(",")}
    write = {part.strip() for part in user.get("write perm", "").split(",")}
    if NEEDED_READ not in read and "all" not in read:
        lines.append(("FAIL", "asterisk: the AMI user %s lacks read=call as Asterisk loaded "
                              "it (read perm: %s): no OriginateResponse would reach it"
                              % (username, user.get("read perm") or "none")))
    for _, privilege in NEEDED_ACTIONS:
        if privilege not in write and "all" not in write:
            lines.append(("FAIL", "asterisk: the AMI user %s lacks write=%s as Asterisk "
                                  "loaded it (write perm: %s)"
                                  % (username, privilege, user.get("write perm") or "none")))
    if not lines:
        lines.append(("ok", "asterisk: the AMI user %s has read=%s and write=%s"
                            % (username, user.get("read perm"), user.get("write perm"))))
    return lines


def hook_lines(agi_dir, user):
    problems = hook_problems(agi_dir, user)
    if problems:
        return [("FAIL", "asterisk: %s" % problem) for problem in problems]
    return [("ok", "asterisk: the hook %s/callexchange-webhook.agi can be run by "
                   "Asterisk's user %s" % (agi_dir.rstrip("/"), user or "root"))]
