"""The dialplan hook, `AGI(callexchange-webhook.agi,connect|hangup)`: read the call's
channel variables over AGI, spool the event durably, wake or start the deliverer, return.

Its whole run must fit in 50 ms whatever the CRM does, and a webhook problem must never
change the call: it always exits 0. It runs with `python3 -S`: stdlib only.
"""

import os
import sys

from callexchange.statedir import StateDir, sweep_old_files
from callexchange.webhooks.deliverer import start_deliverer
from callexchange.webhooks.payload import (CALL_VARIABLES, EVENTS, HANGUP_VARIABLES,
                                           make_record, unanswered_recording)
from callexchange.webhooks.spool import Spool


def _log(session, message):
    sys.stderr.write("callexchange-webhook: %s\n" % message)
    if session is not None:
        session.verbose("callexchange-webhook: %s" % message)


def _discard_unanswered_recording(session, variables, root):
    """A call that never connected keeps no recording (dialer mode: the empty file that
    MixMonitor opened while the agent's phone rang). MixMonitor may still hold it open:
    unlinking is safe, nothing more is written under its name."""
    path = unanswered_recording(variables, root)
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        _log(session, "cannot remove the unanswered call's recording %s: %s"
             % (path, error.strerror or error))


# Hangup marks older than this are swept (at most once per MARK_SWEEP_EVERY seconds): the
# duplicate rule looks at a call for at most [dial] dedupe_seconds (3600 at most) or an
# unconfirmed Originate's ring time (600 s and the AMI deadline).
MARK_KEEP_SECONDS = 2 * 3600
MARK_SWEEP_EVERY = 600


def mark_hangup(session, state_dir, uniqueid, clock=None):
    """Leave call `uniqueid`'s hangup mark, an empty file in the spool (`StateDir.
    hangup_mark`), so that the endpoint's duplicate rule (calls.duplicates) treats a
    redial as a new call; and now and then sweep the old ones. Never raises: a mark that
    cannot be written costs only that a redial within dedupe_seconds is a duplicate."""
    import time

    places = StateDir(state_dir)
    path = places.hangup_mark(uniqueid)
    if path is None:
        return
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        except FileNotFoundError:
            os.makedirs(places.hangups, 0o750, exist_ok=True)
            # The web server (the spool's group) must reach the marks whatever Asterisk's
            # umask; the spool's setgid bit, if any, carries its group on.
            os.chmod(places.hangups, 0o750 | (os.stat(places.webhooks).st_mode & 0o2000))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
        os.close(fd)
        _sweep_marks(places.hangups, (clock or time.time)())
    except OSError as error:
        _log(session, "cannot write the hangup mark of %s in %s: %s"
             % (uniqueid, places.hangups, error.strerror or error))


def _sweep_marks(directory, now):
    sweep_old_files(directory, ".swept", MARK_SWEEP_EVERY, MARK_KEEP_SECONDS, now,
                    lambda name: not name.startswith("."))


class CallReadInterrupted(Exception):
    """Asterisk went away while the call's variables were read: `variables` holds what
    was read before (enough to send the event if the call's id is among it), `cause`
    the agi.AgiError."""

    def __init__(self, variables, cause):
        super().__init__(str(cause))
        self.variables = variables
        self.cause = cause


def read_call(session, event):
    """The channel variables the `event` needs, over an AgiSession: one GET FULL VARIABLE
    of their names (a GET VARIABLE each if that fails), plus CDR(billsec) when needed.
    Raises CallReadInterrupted (with what was read before) on an agi.AgiError."""
    from callexchange.pbx.agi import AgiError

    variables = {}
    try:
        variables.update(session.get_variables(
            CALL_VARIABLES + (HANGUP_VARIABLES if event == "hangup" else ())))
        if (event == "hangup" and variables.get("DIALSTATUS", "").upper() == "ANSWER"
                and not variables.get("ANSWEREDTIME")):
            variables["CDR(billsec)"] = session.get_variable("CDR(billsec)")
    except AgiError as error:
        raise CallReadInterrupted(variables, error) from error
    return variables


def hook_main(argv=None, read_fd=0, write_fd=1, environ=None):
    """`AGI(callexchange-webhook.agi,connect|hangup)`: spool the event, wake or start the
    deliverer, return. Always exits 0: a webhook problem must never change the call."""
    try:
        import _signal as signals  # the core of `signal`, which imports enum: ~5 ms
    except ImportError:  # pragma: no cover - other interpreters
        import signal as signals

    # Asterisk sends SIGHUP when the channel hangs up (the hangup event runs exactly
    # then): the event must still be written.
    signals.signal(signals.SIGHUP, signals.SIG_IGN)
    argv = sys.argv if argv is None else argv
    try:
        return _hook(argv, read_fd, write_fd, os.environ if environ is None else environ)
    except Exception:
        import traceback

        _log(None, "internal error, event not sent:\n" + traceback.format_exc())
        return 0


def _hook(argv, read_fd, write_fd, environ):
    from callexchange.pbx.agi import AgiError, AgiSession

    event = argv[1].strip().lower() if len(argv) > 1 else ""
    if event not in EVENTS:
        _log(None, "usage: AGI(callexchange-webhook.agi,connect|hangup), got %r" % event)
        return 0
    session = AgiSession(read_fd, write_fd)
    environment = {}
    try:
        environment = session.read_environment()
        variables = read_call(session, event)
    except (AgiError, CallReadInterrupted) as error:
        # Asterisk went away mid-way: send what we have if we know whose call it is.
        _log(None, "AGI: %s" % error)
        session = None
        variables = error.variables if isinstance(error, CallReadInterrupted) else {}
    uniqueid = variables.get("CX_UNIQUEID") or environment.get("agi_uniqueid", "")
    if not uniqueid:
        _log(session, "no CX_UNIQUEID on this channel; no %s webhook" % event)
        return 0
    # (A call the gateway did not place has no CX_UNIQUEID: the channel's own id serves.)
    variables["CX_UNIQUEID"] = uniqueid

    from callexchange.config import ConfigError, load_config

    try:
        # Lenient: an admin mid-edit must not cost a call its webhook. What can be read
        # of the file (defaults for the rest) is enough to spool the event; the deliverer
        # sends it once the config loads again.
        config = load_config(environ.get("CALLEXCHANGE_CONFIG") or None, lenient=True)
    except ConfigError as error:
        _log(session, "config unreadable (%s): %s webhook of %s not sent"
             % (error, event, uniqueid))
        return 0
    if config.problems:
        _log(session, "config: %s; %s webhook of %s %s" % (
            "; ".join(map(str, config.problems)), event, uniqueid,
            "spooled, sent once the config is fixed" if config.webhook.url
            else "not sent: no [webhook] url could be read"))
    if event == "hangup":
        mark_hangup(session, config.state.dir, uniqueid)
        _discard_unanswered_recording(session, variables, config.recordings.root)
    if not config.webhook.url:
        return 0
    record = make_record(event, variables, config.webhook, config.recordings.base_url)
    spool = Spool.for_state_dir(config.state.dir)
    try:
        spool.add(record)
    except OSError as error:
        _log(session, "cannot write %s: %s; %s webhook of %s lost"
             % (spool.root, error.strerror or error, event, uniqueid))
        return 0
    try:
        if not spool.wake():
            start_deliverer(config.path)
    except OSError as error:
        _log(session, "cannot start the deliverer (%s); the timer will send the event"
             % (error.strerror or error))
    return 0
