"""The connect and hangup webhooks (SPEC §6): the dialplan hook, the payloads, the
Standard Webhooks signature, and the deliverer.

The path of an event::

    dialplan: AGI(callexchange-webhook.agi,connect|hangup)
      -> hook_main(): read the call's channel variables over AGI (agi.py), build the
         legacy body, write it durably into the spool (spool.py), wake the running
         deliverer or start one (detached), exit: the dialplan goes on in milliseconds
      -> Deliverer: peek -> POST -> delete, with requests over one keep-alive session;
         2xx ends an event, 410 stops it, anything else is retried with exponential
         back-off and jitter (honouring Retry-After) for 24 hours, then it is dead

Ordering: a call's events are sent one after the other (a connect before its hangup);
event N+1 of a call waits until N is delivered or dead. Calls do not wait for each other,
except that a CRM that is down (connection refused, time-out, 5xx, 429) pauses every
send for a back-off, during which only a never-tried event may probe it (at most every
PROBE_INTERVAL seconds) instead of a flood of doomed requests. Any other refusal (4xx)
only holds back that call.

Who sends when: the deliverer started by a hook keeps running while events are due
within LINGER seconds (short back-offs) or new events keep coming (each hook wakes it
through the spool's FIFO); after LINGER seconds with neither it exits.
`callexchange webhooks deliver`, run every minute by the systemd timer, takes the longer
back-offs and whatever a reboot left behind.

This module is imported by the hook, whose whole run must fit in 50 ms: its top level
imports only os, sys and time (plus spool, which is as lean). json, hmac, requests and
friends are imported inside the functions of the deliverer, which is another process.
"""

import os
import sys
import time

from .spool import Spool, call_key, dumps_compact

EVENTS = ("connect", "hangup")
DISPOSITIONS = ("answered", "busy", "no_answer", "congestion", "failed")

MAX_AGE = 24 * 3600           # an event not delivered 24 h after it happened is dead
BACKOFF_BASE = 5.0            # first retry after 2.5-5 s, then doubling...
BACKOFF_CAP = 3600.0          # ...up to once an hour
PROBE_INTERVAL = 5.0          # while the CRM backs off, a new event may probe it this often
LINGER = 60.0                 # the background deliverer stays this long without work
LOCK_WAIT = 10.0              # a new deliverer waits this long for an exiting one
MAX_RESPONSE_BYTES = 1 << 20  # read (and discard) at most this much of a CRM reply

# Channel variables the hook reads (GET FULL VARIABLE). The CX_* ones come from the Originate
# (call.py) or the dialplan (CX_RECORDING); the others are Asterisk's own.
CALL_VARIABLES = ("CX_UNIQUEID", "CX_DESTINATION", "CX_EXTENSION", "CX_ANI", "CX_CRM_ID",
                  "CX_RECORDING")
HANGUP_VARIABLES = ("DIALSTATUS", "ANSWEREDTIME", "HANGUPCAUSE", "REASON")

# Dial()'s DIALSTATUS; the OriginateResponse / `failed` extension REASON (Asterisk's
# AST_CONTROL_* codes); the Q.850 HANGUPCAUSE, in that order of preference.
_BY_DIALSTATUS = {"ANSWER": "answered", "BUSY": "busy", "NOANSWER": "no_answer",
                  "CANCEL": "no_answer", "CONGESTION": "congestion", "CHANUNAVAIL": "failed",
                  "DONTCALL": "failed", "TORTURE": "failed", "INVALIDARGS": "failed"}
_BY_REASON = {"0": "failed", "1": "no_answer", "3": "no_answer", "4": "answered",
              "5": "busy", "8": "congestion"}
# (16, normal clearing, says nothing of an answer: without DIALSTATUS it is "failed".)
_BY_CAUSE = {17: "busy", 18: "no_answer", 19: "no_answer", 21: "busy", 34: "congestion",
             38: "congestion", 41: "congestion", 42: "congestion", 44: "congestion"}

_CAUSE_BY_DISPOSITION = {"answered": 16, "busy": 17, "no_answer": 19, "congestion": 34}
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


# --- the payload: pure functions ----------------------------------------------------------

def percent_decode(text):
    """The crm_id as the CRM sent it (call.py percent-encodes it for Asterisk).

    >>> percent_decode("lead%207%2C%20NY")
    'lead 7, NY'
    """
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and _is_hex(text[i + 1:i + 3]):
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
        else:
            out += c.encode("utf-8")
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair):
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def _whole(text, default=0):
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return default


def disposition(variables):
    """How the call ended, from DIALSTATUS, else REASON (the `failed` path), else
    HANGUPCAUSE: one of DISPOSITIONS.

    >>> disposition({"DIALSTATUS": "NOANSWER"})
    'no_answer'
    >>> disposition({"DIALSTATUS": "", "REASON": "5"})
    'busy'
    """
    status = (variables.get("DIALSTATUS") or "").strip().upper()
    if status in _BY_DIALSTATUS:
        return _BY_DIALSTATUS[status]
    reason = (variables.get("REASON") or "").strip()
    if reason in _BY_REASON:
        return _BY_REASON[reason]
    if _whole(variables.get("ANSWEREDTIME"), -1) > 0:
        return "answered"
    return _BY_CAUSE.get(_whole(variables.get("HANGUPCAUSE"), 0), "failed")


def duration(variables, answered):
    """Whole seconds talked: ANSWEREDTIME (Dial's), else CDR(billsec); 0 if not answered."""
    if not answered:
        return 0
    for name in ("ANSWEREDTIME", "CDR(billsec)"):
        seconds = _whole(variables.get(name), -1)
        if seconds >= 0:
            return seconds
    return 0


def recording_url(base_url, relative_path):
    """The recording's URL as find_phone_files.pl lists it: `[recordings] base_url` + the
    path under the recording root ("" when the call has no recording)."""
    if not relative_path:
        return ""
    quoted = "".join(c if c in _URL_SAFE else "".join("%%%02X" % b for b in c.encode("utf-8"))
                     for c in relative_path.lstrip("/"))
    return (base_url.rstrip("/") + "/" if base_url else "") + quoted


def build_body(event, call, extended=False):
    """The JSON body (str) of a webhook, compact, fields in the legacy document's order:

    connect  {"dialed_number","extension","caller_id","uniqueid"}
    hangup   {"dialed_number","extension","duration","caller_id","uniqueid"}

    With `extended`, then: event, timestamp, sequence, crm_id, (hangup: disposition,
    hangup_cause,) recording_url. `call` is a dict with those names (see `call_event`).

    >>> build_body("connect", {"dialed_number": "12127773456", "extension": "2001",
    ...     "caller_id": "12125550100", "uniqueid": "1732700000.483920174622"})
    '{"dialed_number":"12127773456","extension":"2001","caller_id":"12125550100","uniqueid":"1732700000.483920174622"}'
    """
    if event not in EVENTS:
        raise ValueError("unknown event %r" % event)
    body = {"dialed_number": call["dialed_number"], "extension": call["extension"]}
    if event == "hangup":
        body["duration"] = call["duration"]
    body["caller_id"] = call["caller_id"]
    body["uniqueid"] = call["uniqueid"]
    if extended:
        body["event"] = event
        body["timestamp"] = call["timestamp"]
        body["sequence"] = call["sequence"]
        body["crm_id"] = call["crm_id"]
        if event == "hangup":
            body["disposition"] = call["disposition"]
            body["hangup_cause"] = call["hangup_cause"]
        body["recording_url"] = call["recording_url"]
    return dumps_compact(body)


def call_event(event, variables, occurred, base_url=""):
    """Everything the bodies of `event` need, from the channel variables the hook read.

    A hangup's sequence is 2 when the call was answered (its connect came first), else 1.
    """
    answered = event == "connect" or disposition(variables) == "answered"
    call = {
        "dialed_number": variables.get("CX_DESTINATION", ""),
        "extension": variables.get("CX_EXTENSION", ""),
        "caller_id": variables.get("CX_ANI", ""),
        "uniqueid": variables.get("CX_UNIQUEID", ""),
        "timestamp": int(occurred),
        "crm_id": percent_decode(variables.get("CX_CRM_ID", "")),
        "recording_url": recording_url(base_url, variables.get("CX_RECORDING", ""))
        if answered else "",
    }
    if event == "connect":
        call["sequence"] = 1
    else:
        state = disposition(variables)
        call["disposition"] = state
        call["duration"] = duration(variables, state == "answered")
        cause = _whole(variables.get("HANGUPCAUSE"), 0)
        if not 0 < cause <= 127:
            # The `failed` path of an Originate has no HANGUPCAUSE: give the Q.850 cause
            # that goes with the disposition rather than 0 ("unknown").
            cause = _CAUSE_BY_DISPOSITION.get(state, 0)
        call["hangup_cause"] = cause
        call["sequence"] = 2 if state == "answered" else 1
    return call


def webhook_id(uniqueid, event):
    """`webhook-id`: the same for every attempt of one event, unique per event.

    >>> webhook_id("1732700000.483920174622", "hangup")
    'msg_1732700000.483920174622_hangup'
    """
    return "msg_%s_%s" % (call_key(uniqueid), event)


def make_record(event, variables, webhook_config, recordings_base_url="", now=None):
    """The spool record of one event: {"v","id","event","call","occurred","body"}."""
    occurred = int(time.time() if now is None else now)
    call = call_event(event, variables, occurred, recordings_base_url)
    return {
        "v": 1,
        "id": webhook_id(call["uniqueid"], event),
        "event": event,
        "call": call["uniqueid"],
        "occurred": occurred,
        "body": build_body(event, call, webhook_config.extended),
    }


# --- Standard Webhooks signature ----------------------------------------------------------

def signing_key(secret):
    """The HMAC key of a `whsec_<base64>` secret (the prefix is optional). Raises
    ValueError for a secret that is not base64."""
    import base64
    import binascii

    text = secret.strip()
    if text.startswith("whsec_"):
        text = text[len("whsec_"):]
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("[webhook] secret must be whsec_<base64> (callexchange webhooks "
                         "secret prints one)") from None
    if not key:
        raise ValueError("[webhook] secret is empty after whsec_")
    return key


def signature(key, msg_id, timestamp, body):
    """`v1,<base64 HMAC-SHA256 of "<msg_id>.<timestamp>.<body>">`; body as bytes."""
    import base64
    import hashlib
    import hmac

    content = b"%s.%d." % (msg_id.encode("utf-8"), int(timestamp)) + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def request_headers(record, key):
    """The headers of one attempt. `key` from `signing_key`, or None: no signature.

    `webhook-timestamp` is when the event happened (SPEC §6), the same on every retry, so
    a retried request is byte for byte the first one. Standard Webhooks libraries refuse
    a timestamp more than five minutes from their clock by default: a CRM that verifies
    retries after a long outage must widen that tolerance (docs/decisions.md).
    """
    body = record["body"].encode("utf-8")
    timestamp = int(record["occurred"])
    headers = {
        "Content-Type": "application/json",
        "webhook-id": record["id"],
        "webhook-timestamp": str(timestamp),
        "X-CallExchange-Event": record["event"],
        "User-Agent": "CallExchange-Webhooks/1",
    }
    if key is not None:
        headers["webhook-signature"] = signature(key, record["id"], timestamp, body)
    return headers


def new_secret():
    """A fresh `whsec_<base64 of 32 random bytes>` for `[webhook] secret`."""
    import base64

    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")


# --- retry policy: pure functions ---------------------------------------------------------

def backoff_delay(attempt, random_fraction):
    """Seconds before retry number `attempt` (1, 2, ...): BACKOFF_BASE doubling up to
    BACKOFF_CAP, times a jitter between 0.5 and 1 ("equal jitter", `random_fraction` in
    [0, 1)), so that a recovered CRM is not hit by every deliverer at once."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, min(attempt, 30) - 1))
    return delay * (0.5 + 0.5 * random_fraction)


def parse_retry_after(value, now):
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), MAX_AGE))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, min(when - now, MAX_AGE))


class Attempt:
    """What one POST came to: `outcome` is "delivered" (2xx), "gone" (410) or "retry";
    `endpoint_down` marks failures that say the CRM itself is unwell (no connection,
    time-out, 408, 429, 5xx); `error` is a one-line description."""

    def __init__(self, outcome, status=None, error="", retry_after=None, endpoint_down=False):
        self.outcome = outcome
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.endpoint_down = endpoint_down

    def __repr__(self):
        return "<Attempt %s %s %s>" % (self.outcome, self.status, self.error)


def classify(status, reason="", retry_after=None):
    """The Attempt for an HTTP status code."""
    text = ("HTTP %d %s" % (status, reason)).strip()
    if 200 <= status < 300:
        return Attempt("delivered", status)
    if status == 410:
        return Attempt("gone", status, text + ": the CRM asked us to stop sending this event")
    return Attempt("retry", status, text, retry_after,
                   endpoint_down=status in (408, 429) or status >= 500)


# --- the deliverer ------------------------------------------------------------------------

class Deliverer:
    """Sends what the spool holds. One at a time per spool (the caller holds the lock).

    `session`: a requests.Session (made on first use); `clock`: time.time; `random`:
    a function returning [0, 1) for the jitter. Both injectable for tests.
    """

    def __init__(self, config, spool=None, session=None, clock=time.time, random=None):
        self.config = config
        self.webhook = config.webhook
        self.spool = spool or Spool.for_state_dir(config.state.dir)
        self.session = session
        self.clock = clock
        if random is None:
            import random as random_module
            random = random_module.random
        self.random = random
        self._cache = {}
        self._config_stamp = _file_stamp(config.path)

    def refresh_config(self):
        """Take up an edited config file (a new [webhook] url, secret, timeout, TLS
        setting): a deliverer can run for hours. A config that no longer loads is
        ignored, the last good one kept. True when a new config was taken."""
        stamp = _file_stamp(self.config.path)
        if stamp == self._config_stamp:
            return False
        self._config_stamp = stamp
        from .config import ConfigError, load_config
        try:
            config = load_config(self.config.path)
        except ConfigError:
            return False
        self.config, self.webhook = config, config.webhook
        if self.session is not None and hasattr(self.session, "close"):
            self.session.close()  # the old URL's keep-alive connection
        self.session = None
        return True

    def _record(self, name):
        """The record of pending event `name`, parsed once per version of its file (a
        backlog of thousands is scanned on every wake-up: stat, not read and parse).
        Raises FileNotFoundError, ValueError, OSError."""
        status = os.stat(os.path.join(self.spool.new, name))
        version = (status.st_ino, status.st_mtime_ns, status.st_size)
        cached = self._cache.get(name)
        if cached is None or cached[0] != version:
            cached = self._cache[name] = (version, self.spool.read(name))
        return dict(cached[1])

    def _chains(self):
        chains = self.spool.chains()
        if len(self._cache) > 2 * sum(len(chain) for chain in chains) + 100:
            names = {entry.name for chain in chains for entry in chain}
            self._cache = {k: v for k, v in self._cache.items() if k in names}
        return chains

    # --- one POST ---

    def send(self, record):
        """POST one event; return an Attempt. Never raises for network trouble."""
        import requests

        try:
            key = signing_key(self.webhook.secret) if self.webhook.secret else None
        except ValueError as error:
            return Attempt("retry", None, "cannot sign: %s" % error, endpoint_down=True)
        if not self.webhook.url:
            return Attempt("retry", None, "[webhook] url is not set", endpoint_down=True)
        if self.session is None:
            self.session = requests.Session()
        headers = request_headers(record, key)
        try:
            response = self.session.post(
                self.webhook.url, data=record["body"].encode("utf-8"), headers=headers,
                timeout=(self.webhook.timeout, self.webhook.timeout),
                verify=self.webhook.verify_tls, allow_redirects=False, stream=True)
            try:
                received = 0
                for chunk in response.iter_content(65536):
                    received += len(chunk)
                    if received > MAX_RESPONSE_BYTES:
                        break
            finally:
                response.close()
        except requests.RequestException as error:
            return Attempt("retry", None, _one_line("%s: %s" % (type(error).__name__, error)),
                           endpoint_down=True)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
        return classify(response.status_code, response.reason or "", retry_after)

    # --- endpoint state (shared by successive runs through endpoint.json) ---

    def endpoint_state(self):
        import json

        try:
            with open(self.spool.endpoint_path, encoding="utf-8") as handle:
                state = json.load(handle)
            if isinstance(state, dict):
                return state
        except (OSError, ValueError):
            pass
        return {}

    def _save_endpoint(self, state):
        import json

        path = self.spool.endpoint_path
        if not state:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        owner = self.spool.owner()
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)

    # --- passes over the spool ---

    def deliver(self, all_now=False):
        """Send everything that is due now, per call in order, until nothing due is left
        or the CRM is down. `all_now` ignores back-off (events and endpoint); each event is
        tried at most once per call. Returns a dict of counts: delivered, retry, dead,
        gone, and `blocked` (True when the CRM's back-off kept everything waiting)."""
        summary = {"delivered": 0, "retry": 0, "dead": 0, "gone": 0, "blocked": False,
                   "last_error": ""}
        tried = set()
        self.spool.sweep_tmp()  # (real time: it compares with files' mtimes)
        while True:
            progress, stop = self._pass(all_now, tried, summary)
            if stop or not progress:
                return summary

    def _pass(self, all_now, tried, summary):
        now = self.clock()
        endpoint = self.endpoint_state()
        # While the CRM is backing off, a never-tried event may go as a probe (one per
        # PROBE_INTERVAL): a new call's event finds out soon that the CRM is back.
        blocked = not all_now and endpoint.get("next_at", 0) > now
        probed = now - endpoint.get("last_at", 0) < PROBE_INTERVAL
        if blocked and probed:
            summary["blocked"] = True
            return False, True  # nothing may go now: not even a look at the spool
        progress = False
        for chain in self._chains():
            for entry in chain:
                if entry.name in tried:
                    break
                try:
                    record = self._record(entry.name)
                except FileNotFoundError:
                    continue
                except ValueError:
                    self._bury_unreadable(entry.name)
                    summary["dead"] += 1
                    continue
                except OSError as error:  # e.g. not ours to read: leave it, say so
                    summary["last_error"] = "cannot read %s: %s" % (entry.name, error)
                    break
                now = self.clock()
                deadline = record.get("window_start", record.get("occurred", 0)) + MAX_AGE
                if now >= deadline:
                    self._bury(entry.name, record, "not delivered within 24 hours; last "
                               "error: %s" % (record.get("last_error") or "none"), now)
                    summary["dead"] += 1
                    continue
                if not all_now and record.get("next_at", 0) > now:
                    break
                if blocked:
                    if probed or record.get("attempts", 0):
                        break
                    probed = True
                tried.add(entry.name)
                attempt = self.send(record)
                now = self.clock()
                if attempt.outcome == "delivered":
                    self.spool.remove(entry.name)
                    summary["delivered"] += 1
                    progress = True
                    blocked = False
                    if endpoint:
                        endpoint = {}
                        self._save_endpoint(endpoint)
                    continue
                if attempt.outcome == "gone":
                    self._bury(entry.name, record, attempt.error, now, attempt.status)
                    summary["gone"] += 1
                    progress = True
                    continue
                summary["retry"] += 1
                summary["last_error"] = attempt.error
                self._reschedule(entry.name, record, attempt, now, deadline)
                if attempt.endpoint_down:
                    failures = endpoint.get("failures", 0) + 1
                    wait = backoff_delay(failures, self.random())
                    if attempt.retry_after is not None:
                        wait = max(wait, attempt.retry_after)
                    self._save_endpoint({"failures": failures, "next_at": now + wait,
                                         "last_at": now, "since": endpoint.get("since", now),
                                         "last_error": attempt.error})
                    summary["blocked"] = True
                    return progress, True
                if endpoint:
                    blocked = False
                    endpoint = {}
                    self._save_endpoint(endpoint)
                break  # the call's later events wait for this one
        summary["blocked"] = blocked
        return progress, False

    def _reschedule(self, name, record, attempt, now, deadline):
        attempts = record.get("attempts", 0) + 1
        wait = backoff_delay(attempts, self.random())
        if attempt.retry_after is not None:
            wait = max(wait, attempt.retry_after)
        next_at = now + wait
        if next_at >= deadline:
            # One last try just before the 24 hours are up (or none, if the CRM's own
            # Retry-After points past them: the next pass buries it).
            next_at = deadline if attempt.retry_after is not None else max(now, deadline - 1)
        record.update(attempts=attempts, next_at=next_at, last_attempt_at=now,
                      last_error=attempt.error, last_status=attempt.status)
        self.spool.update(name, record)

    def _bury(self, name, record, reason, now, status=None):
        record.update(dead_at=now, dead_reason=reason)
        if status is not None:
            record["last_status"] = status
        try:
            self.spool.bury(name, record)
        except FileNotFoundError:
            pass

    def _bury_unreadable(self, name):
        try:
            os.makedirs(self.spool.dead_dir, exist_ok=True)
            os.rename(os.path.join(self.spool.new, name), os.path.join(self.spool.dead_dir, name))
        except FileNotFoundError:
            pass

    def next_due(self):
        """Unix time at which something pending is due (now or later), or None when the
        spool holds nothing pending. Takes the CRM's back-off into account."""
        due = None
        fresh = False
        for chain in self._chains():
            try:
                record = self._record(chain[0].name)
            except ValueError:
                return self.clock()  # due now: the next pass buries it
            except OSError:
                continue  # vanished, or not ours to read: nothing we can send
            when = min(record.get("next_at", 0),
                       record.get("window_start", record.get("occurred", 0)) + MAX_AGE)
            due = when if due is None else min(due, when)
            fresh = fresh or not record.get("attempts")
        if due is None:
            return None
        endpoint = self.endpoint_state()
        blocked_until = endpoint.get("next_at", 0)
        if fresh:  # a never-tried event may probe the CRM
            blocked_until = min(blocked_until, endpoint.get("last_at", 0) + PROBE_INTERVAL)
        return max(due, blocked_until)

    def serve(self, linger=LINGER, wait=None, all_now=False, fd=None):
        """Deliver until nothing is due within `linger` seconds and no event came for
        `linger` seconds, woken by hooks through the spool's FIFO; return the counts of
        every pass added up (see `deliver`). The caller holds the spool lock. `all_now`
        applies to the first pass. `fd`: the FIFO, if the caller opened it already (it is
        closed on return). `wait(fd, seconds)` waits for a wake-up, True if one came
        (select() on the FIFO; injectable for tests)."""
        import select

        def default_wait(fd, seconds):
            return bool(select.select([fd], [], [], seconds)[0])

        wait = wait or default_wait
        total = {"delivered": 0, "retry": 0, "dead": 0, "gone": 0, "blocked": False,
                 "last_error": ""}
        if fd is None:
            fd = self.spool.listen()
        try:
            while True:
                all_now = self.spool.drain(fd) or all_now
                self.refresh_config()
                summary = self.deliver(all_now=all_now)
                all_now = False
                for key in ("delivered", "retry", "dead", "gone"):
                    total[key] += summary[key]
                total["blocked"] = summary["blocked"]
                total["last_error"] = summary["last_error"] or total["last_error"]
                due = self.next_due()
                if due is not None and due - self.clock() <= linger:
                    wait(fd, max(0.0, due - self.clock()))
                    continue
                # Nothing due soon (an empty spool, or a CRM backing off for long): stay
                # for the next calls' events, which wake us (a cold start costs the
                # import of requests, ~100 ms; during an outage each new event is a
                # probe), unless none comes for `linger` seconds.
                if linger > 0 and wait(fd, linger):
                    continue
                # Stop listening first, then look once more: an event published before
                # this look is seen here; one published after it found no listener, so
                # its hook started a deliverer, which takes over once we exit.
                os.close(fd)
                fd = None
                due = self.next_due()
                if due is not None and due - self.clock() <= linger:
                    fd = self.spool.listen()
                    continue
                return total
        finally:
            if fd is not None:
                os.close(fd)


def _file_stamp(path):
    """What tells that a file changed: (mtime_ns, size, inode), or None if unreadable."""
    try:
        status = os.stat(path)
    except (OSError, TypeError):
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def _one_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def linger_seconds(environ=None):
    """LINGER, or $CALLEXCHANGE_WEBHOOK_LINGER (seconds) when set."""
    environ = os.environ if environ is None else environ
    try:
        return max(0.0, float(environ.get("CALLEXCHANGE_WEBHOOK_LINGER", LINGER)))
    except ValueError:
        return LINGER


def background_main(config_path):
    """The detached deliverer a hook starts: wait (briefly) for the lock, deliver, exit.
    Its stdio is /dev/null: a crash is written to the spool's deliverer.err."""
    from .config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError:
        return 2
    spool = Spool.for_state_dir(config.state.dir)
    try:
        # Listen first: from now on hooks wake us instead of starting more deliverers.
        # While we wait for the lock we never read the FIFO, so a wake-up meant for the
        # deliverer at work stays there for it.
        fd = spool.listen()
        deadline = time.monotonic() + LOCK_WAIT
        lock = spool.try_lock()
        while lock is None:
            if time.monotonic() >= deadline:
                os.close(fd)
                return 0  # the deliverer at work has our event
            time.sleep(0.02)
            lock = spool.try_lock()
        try:
            Deliverer(config, spool).serve(linger=linger_seconds(), fd=fd)
        finally:
            os.close(lock)
    except Exception:
        import traceback

        try:
            with open(spool.crash_path, "w", encoding="utf-8") as handle:
                handle.write(time.strftime("%Y-%m-%d %H:%M:%S ") + traceback.format_exc())
        except OSError:
            pass
        return 1
    return 0


# --- the dialplan hook --------------------------------------------------------------------

_LIB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from callexchange.webhooks import background_main; "
         "sys.exit(background_main(sys.argv[2]))")


def start_deliverer(config_path, python=None):
    """Start a detached deliverer: double fork, new session, stdio on /dev/null, every
    other descriptor closed (Asterisk waits for the AGI's stdout to close), exec a fresh
    interpreter. Returns once the intermediate child is reaped (well under a millisecond)."""
    python = python or sys.executable
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 1 << 16)
            os.execv(python, [python, "-c", _BOOT, _LIB_DIR, config_path])
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def _lenient_config(path):
    """What the hook needs of a config that does not validate: the raw [state] dir,
    [webhook] url and extended, [recordings] base_url, defaults where absent. None if the
    file cannot be read or parsed at all."""
    from types import SimpleNamespace

    from .config import DEFAULT_PATH, SCHEMA, ConfigError, config_path, parse_ini

    path = path or config_path()
    try:
        with open(path, encoding="utf-8") as handle:
            raw = parse_ini(handle.read(), path)
    except (OSError, UnicodeDecodeError, ConfigError):
        return None

    def value(section, key):
        given = raw.get(section, {}).get(key)
        return given[0] if given else SCHEMA[section][key][1]

    extended = value("webhook", "extended").strip().lower() in ("1", "yes", "true", "on")
    return SimpleNamespace(
        path=path or DEFAULT_PATH,
        state=SimpleNamespace(dir=value("state", "dir")),
        webhook=SimpleNamespace(url=value("webhook", "url"), extended=extended),
        recordings=SimpleNamespace(base_url=value("recordings", "base_url")))


def _log(session, message):
    sys.stderr.write("callexchange-webhook: %s\n" % message)
    if session is not None:
        session.verbose("callexchange-webhook: %s" % message)


def read_call(session, event):
    """The channel variables the `event` needs, over an AgiSession: one GET FULL VARIABLE
    of their names (a GET VARIABLE each if that fails), plus CDR(billsec) when needed.
    Raises agi.AgiError; what was read before the error is in the exception's `partial`."""
    from .agi import AgiError

    variables = {}
    try:
        variables.update(session.get_variables(
            CALL_VARIABLES + (HANGUP_VARIABLES if event == "hangup" else ())))
        if (event == "hangup" and variables.get("DIALSTATUS", "").upper() == "ANSWER"
                and not variables.get("ANSWEREDTIME")):
            variables["CDR(billsec)"] = session.get_variable("CDR(billsec)")
    except AgiError as error:
        error.partial = variables
        raise
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
    from .agi import AgiError, AgiSession

    event = argv[1].strip().lower() if len(argv) > 1 else ""
    if event not in EVENTS:
        _log(None, "usage: AGI(callexchange-webhook.agi,connect|hangup), got %r" % event)
        return 0
    session = AgiSession(read_fd, write_fd)
    environment = {}
    try:
        environment = session.read_environment()
        variables = read_call(session, event)
    except AgiError as error:
        # Asterisk went away mid-way: send what we have if we know whose call it is.
        _log(None, "AGI: %s" % error)
        session = None
        variables = getattr(error, "partial", {})
    uniqueid = variables.get("CX_UNIQUEID") or environment.get("agi_uniqueid", "")
    if not uniqueid:
        _log(session, "no CX_UNIQUEID on this channel; no %s webhook" % event)
        return 0
    # (A call the gateway did not place has no CX_UNIQUEID: the channel's own id serves.)
    variables["CX_UNIQUEID"] = uniqueid

    from .config import ConfigError, load_config

    try:
        config = load_config(environ.get("CALLEXCHANGE_CONFIG") or None)
    except ConfigError as error:
        # An admin mid-edit must not cost a call its webhook: spool it with what can be
        # read of the file; the deliverer sends it once the config loads again.
        config = _lenient_config(environ.get("CALLEXCHANGE_CONFIG") or None)
        _log(session, "config: %s; %s webhook of %s spooled, sent once the config is "
                      "fixed" % (error, event, uniqueid))
        if config is None:
            _log(session, "config unreadable: %s webhook of %s not sent" % (event, uniqueid))
            return 0
    if not config.webhook.url:
        return 0
    record = make_record(event, variables, config.webhook, config.recordings.base_url)
    spool = Spool.for_state_dir(config.state.dir)
    try:
        pause = float(environ.get("CALLEXCHANGE_HOOK_TEST_PAUSE") or 0)
    except ValueError:
        pause = 0.0
    try:
        spool.add(record, pause_before_publish=pause)
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
