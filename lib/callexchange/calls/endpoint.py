"""Issue a call (asteriskapi.pl): validate, choose the caller ID, originate, reply.

`issue_call` is the whole endpoint for one request object (a plain body or one JSON-RPC
entry): it returns (status, legacy reply body, placed, replayed). Errors are rendered here, at the
edge, into the legacy shape with its `message: We fail on making a call...` line.
"""

import os
import time

from callexchange import keys, percent
from callexchange.calls import ani, duplicates, numbers, quota
from callexchange.calls.replay import ReplayStore
from callexchange.errors import ApiError, CallMayBePlaced, ServerConfigError, report, status_line
from callexchange.params import bool_field, is_blank, number_field, text_field
from callexchange.statedir import StateDir


MISSING_ERROR = "Missing parameters: api-key, extension, or destination"
_EXTENSION_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ*#+_.-")

# Ring times (asterisk/README.md, "Ring times"): the agent's phone rings at most
# [dial] ring_timeout, the lead's at most the dialplan's CX_LEAD_RING, in both modes. In
# dialer mode the Originate waits for the lead, whose Dial() in callexchange-outbound
# stops at CX_LEAD_RING: its Timeout is only a backstop above any ring time, so that it
# never cuts the lead's ring short.
DIALER_ORIGINATE_TIMEOUT = 600
# Agent first: pushed on the agent's channel as Asterisk creates it; keeps the cause of a
# phone that never answers (busy, ...) for the dialplan's `failed` extension.
AGENT_UNANSWERED_HANDLER = "callexchange-agent-unanswered"


def without_optimisation(channel):
    """The Originate's channel with the /n option if it is a Local channel without it:
    Asterisk must not optimise the Local pair away once both halves are bridged, since
    its ;1 runs the call's hangup handler (configs written before lead_channel's default
    had /n dial `Local/{destination}@callexchange-outbound`).

    >>> without_optimisation("Local/12127773456@callexchange-outbound")
    'Local/12127773456@callexchange-outbound/n'
    >>> without_optimisation("Local/12127773456@callexchange-outbound/j")
    'Local/12127773456@callexchange-outbound/jn'
    >>> without_optimisation("Local/12127773456@callexchange-outbound/n")
    'Local/12127773456@callexchange-outbound/n'
    >>> without_optimisation("PJSIP/2001")
    'PJSIP/2001'
    """
    technology, slash, rest = channel.partition("/")
    if technology.lower() != "local" or not slash:
        return channel
    destination, _, options = rest.partition("/")
    if "n" in options:
        return channel
    return "%s/%s/%sn" % (technology, destination, options)


def new_uniqueid(clock=time.time):
    """A call id in Asterisk's own `<epoch>.<digits>` form, random enough to be unique.

    It becomes the Originate ChannelId and the last field of the recording's file name,
    so it holds only digits and one dot: no dash to shift the name's fields.
    """
    return "%d.%012d" % (int(clock()), int.from_bytes(os.urandom(8), "big") % 10 ** 12)


def failure_message(params):
    """The legacy `message` of every error reply: who was to be called."""
    def shown(name):
        value = params.get(name)
        if value is None or isinstance(value, (dict, list)):
            return ""
        # One line, whatever was sent: CRMs log this message.
        return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in str(value)).strip()
    return "We fail on making a call. caller : %s, callee : %s" % (
        shown("extension"), shown("destination"))


def error_reply(error, params):
    """The legacy error object for an ApiError."""
    body = {"status": status_line(error.status), "icon": "error", "error": error.error,
            "message": failure_message(params)}
    # `uniqueid`: an Originate sent but not confirmed may ring; its webhooks carry this id.
    # `error_id`: a server configuration error, whose detail is in the operator's log.
    body.update((k, v) for k, v in error.extra.items()
                if k in ("missing", "field", "uniqueid", "error_id"))
    return body


def _check_extension(value):
    if len(value) > 40 or not set(value) <= _EXTENSION_CHARS:
        raise ApiError(400, "Field 'extension' must be 1 to 40 letters, digits or * # + _ . -",
                       field="extension")
    return value


def _check_msg(value):
    if value is not None and len(value.encode("utf-8")) > 1000:
        raise ApiError(400, "Field 'msg' is longer than 1000 bytes (UTF-8)", field="msg")
    return value


def _check_crm_id(value):
    # It travels percent-encoded in one `Variable: __CX_CRM_ID=...` line, which Asterisk
    # limits to 1024 bytes: 128 characters always fit unless they are mostly CJK or emoji
    # (9 to 12 encoded bytes each).
    if value is not None and len(percent.encode(value)) > 990:
        raise ApiError(400, "Field 'crm_id' is too long once percent-encoded (at most 990 "
                            "bytes; use fewer non-ASCII characters)", field="crm_id")
    return value


def issue_call(config, params, api_key, protect_double_click=True, not_after=None,
               log=None, ami_client=None, clock=time.time, label=None):
    """Place one call for `params` (names already normalised). Returns (status, body,
    placed, replayed); `placed` is also True when Asterisk may have placed it without
    confirming; `replayed`: the request was a duplicate (calls.duplicates), answered with
    the first call's reply, and dialled nothing.
    `not_after`: the time.monotonic() by which the whole HTTP request must be answered.
    `log(text)`: where a PBX-side failure (502, 503, a failed MessageSend) is written
    for the operator, one line each (Apache's error.log: the WSGI `wsgi.errors`).
    `ami_client`: anything with `pbx.ami.place_call`'s signature (default: that function,
    a session per call; persistent mode: its process's long-lived link). `clock`: the
    wall clock of the double-click window ([dial] dedupe_seconds). `label`: the key's
    label when the caller already checked it with `caller_label` (one keys-file read
    per request)."""
    try:
        try:
            return _issue_call(config, params, api_key, protect_double_click, not_after, log,
                               ami_client, clock, label)
        except OSError as error:  # the state dir: ANI counts, replay store, carrier shards
            raise ApiError(500, "Server error: cannot use the state dir %s ([state] dir): %s"
                           % (config.state.dir, error.strerror or error)) from None
    except ApiError as error:
        report(error, log)
        return (error.status, error_reply(error, params), isinstance(error, CallMayBePlaced),
                False)


def caller_label(config, params, api_key):
    """The label of the key a call request comes with: 400 when the key, extension or
    destination is missing, 401 for an unknown key (see `keys.authenticate`). Reads the
    keys file and writes nothing: it runs before anything else of the request does."""
    missing = [name for name, value in (("api-key", api_key),
                                        ("extension", params.get("extension")),
                                        ("destination", params.get("destination")))
               if is_blank(value)]
    if missing:
        raise ApiError(400, MISSING_ERROR, missing=missing)
    return keys.authenticate(config.auth.keys_file, api_key)


def _issue_call(config, params, api_key, protect_double_click, not_after, log, ami_client,
                clock, label):
    if label is None:
        label = caller_label(config, params, api_key)

    extension = _check_extension(text_field(params, "extension"))
    destination = text_field(params, "destination")
    pitch = number_field(params, "voice_pitch", 1.0, 0.1, 2.0)
    dialer_mode = bool_field(params, "call_in_out", False)
    msg = _check_msg(text_field(params, "msg"))
    crm_id = _check_crm_id(text_field(params, "crm_id", max_chars=128))
    if not numbers.known_region(config.dial.default_region):
        raise ServerConfigError(config.error("dial", "default_region",
                                             "is not a region phonenumbers knows"))
    try:
        number = numbers.analyze(destination, config.dial.default_region,
                                 carrier_cache_dir=StateDir(config.state.dir).numbers)
    except numbers.NotAPhoneNumber as error:
        raise ApiError(400, str(error), field="destination") from None

    # The toll-fraud guard: 403 naming the rule now, or, around the Originate, a slot in
    # the key's counts that is given back when no call was placed.
    admission = quota.admit(config, label, number)

    def place():
        with admission:
            return _place(config, extension, number, pitch, dialer_mode, msg, crm_id,
                          not_after, log, ami_client)

    if not protect_double_click or config.dial.dedupe_seconds <= 0:
        status, body = place()
        return status, body, True, False
    # The one duplicate rule (calls.duplicates): a repeat of this call, under the flock
    # its twins wait on.
    budget = config.ami.connect_timeout + config.ami.timeout
    ring = DIALER_ORIGINATE_TIMEOUT if dialer_mode else config.dial.ring_timeout
    store = ReplayStore(StateDir(config.state.dir).dedupe,
                        max(config.dial.dedupe_seconds, DIALER_ORIGINATE_TIMEOUT + budget),
                        clock)
    with store.guard("%s\0%s\0%s" % (label, extension, number.dial_digits),
                     not_after=not_after) as guard:
        if guard.entry is not None and duplicates.duplicate_of(
                guard.entry, clock(), config.dial.dedupe_seconds, config.state.dir):
            status, body = guard.previous
            return status, body, False, True
        try:
            status, body = place()
        except CallMayBePlaced as error:
            # It may ring for as long as the Originate's Timeout, which Asterisk may
            # start as late as the end of this request's AMI deadline.
            guard.remember(error.status, error_reply(error, params),
                           unconfirmed_until=clock() + ring + budget)
            raise
        guard.remember(status, body)
    store.prune()
    return status, body, True, False


def log_call_failure(log, uniqueid, extension, destination, what):
    """One line for the operator's error log about call `uniqueid`: who was to be
    called and what failed (AMI texts never hold the secret; no key or message text)."""
    if log is not None:
        log("callexchange: call %s (extension %s, destination %s): %s\n"
            % (uniqueid, extension, destination, what))


def _place(config, extension, number, pitch, dialer_mode, msg, crm_id, not_after=None,
           log=None, ami_client=None):
    from callexchange.pbx import ami

    ledger = ani.AniLedger(config.state.dir)
    # Counted now, on disk before the reply: the wait for the disk overlaps Asterisk's
    # answer to the Originate (ami's while_waiting), else it comes after it.
    reserved = ledger.reserve(ani.candidates_for(config.ani, number.region,
                                                 number.main_region),
                              ani.read_flagged(config.ani.flagged_file),
                              config.ani.daily_limit, defer_sync=True)
    caller_id, clean = reserved
    count_failures = []

    def count_durably():
        if not count_failures:
            try:
                reserved.sync()
            except OSError as error:
                count_failures.append(error)
    uniqueid = new_uniqueid()
    agent_dial = config.dial.agent_channel.format(extension=extension)
    variables = [
        ("__CX_UNIQUEID", uniqueid),
        ("__CX_ANI", caller_id),
        ("__CX_PITCH", "%g" % pitch),
        ("__CX_MODE", "dialer" if dialer_mode else "agent_first"),
        ("__CX_EXTENSION", extension),
        ("__CX_DESTINATION", number.dial_digits),
        # Percent-encoded: Asterisk splits Variable headers and AGI arguments on commas.
        ("__CX_CRM_ID", percent.encode(crm_id or "")),
        # How the dialplan rings the agent in dialer mode ([dial] agent_channel, whose
        # config check keeps it free of what a Variable header cannot carry).
        ("__CX_AGENT_DIAL", agent_dial),
        ("__CX_AGENT_RING", config.dial.ring_timeout),
    ]
    if dialer_mode:
        originate = dict(channel=config.dial.lead_channel.format(destination=number.dial_digits),
                         context=config.dial.agent_context, exten=extension,
                         caller_id=caller_id, timeout_ms=DIALER_ORIGINATE_TIMEOUT * 1000)
    else:
        originate = dict(channel=agent_dial, context=config.dial.outbound_context,
                         exten=number.dial_digits, caller_id=number.dial_digits,
                         timeout_ms=config.dial.ring_timeout * 1000,
                         hangup_handler=AGENT_UNANSWERED_HANDLER)
    originate.update(channel=without_optimisation(originate["channel"]), priority=1,
                     variables=variables, channel_id=uniqueid)
    message_to = config.dial.message_to.format(extension=extension)
    message = (message_to, msg, config.dial.message_from) if msg else None
    try:
        outcome = (ami_client or ami).place_call(config.ami, originate, message=message,
                                                 not_after=not_after,
                                                 while_waiting=count_durably)
    except ami.OriginateUnconfirmed as error:
        # The Originate left but Asterisk never confirmed it: the call may be ringing.
        # Keep the caller ID's count, and let the reply be replayed to a retry.
        count_durably()
        log_call_failure(log, uniqueid, extension, number.dial_digits, "%d %s" % (
            error.http_status, error.detail))
        raise CallMayBePlaced(error.detail, error.uniqueid) from None
    except ami.AmiError as error:
        log_call_failure(log, uniqueid, extension, number.dial_digits, "%d %s" % (
            error.http_status, error.detail))
        ledger.release(caller_id, reserved.day)
        raise ApiError(error.http_status, error.detail) from None
    except ValueError as error:  # refused by the AMI encoder: never reached Asterisk
        ledger.release(caller_id, reserved.day)
        raise ApiError(400, "Cannot send to Asterisk: %s" % error) from None
    count_durably()
    if count_failures:
        # The call is placed and the CRM is told so (an error would invite a retry that
        # dials the lead twice); the count is in the file, though perhaps not on disk.
        log_call_failure(log, uniqueid, extension, number.dial_digits,
                         "the call was placed, but its caller-ID count may not be on disk "
                         "(fdatasync of the state dir's ani/ failed: %s)"
                         % (count_failures[0].strerror or count_failures[0]))
    body = {
        "status": "true",
        "icon": number.region,
        "message": "Success making a call",
        "phone_valid": "yes" if number.valid else "no",
        "country_code": number.country_code,
        "carrier": number.carrier,
        "caller_id": caller_id,
        "check_spam": "true" if clean else "false",
        "uniqueid": uniqueid,
    }
    if crm_id is not None:
        body["crm_id"] = crm_id
    if msg:
        body["msg_sent"] = "true" if outcome.get("msg_sent") else "false"
        if not outcome.get("msg_sent"):
            log_call_failure(log, uniqueid, extension, number.dial_digits,
                             "the call was placed, but the MessageSend to %s failed: %s"
                             % (message_to, outcome.get("msg_error")))
    return 200, body
