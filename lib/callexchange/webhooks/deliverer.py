"""The deliverer: sends what the spool holds to the CRM, in order per call.

Ordering: a call's events are sent one after the other (a connect before its hangup);
event N+1 of a call waits until N is delivered or dead. Calls do not wait for each other,
except that a CRM that is down (connection refused, time-out, 5xx, 429) pauses every
send for a back-off (5 s doubling, at most CRM_BACKOFF_CAP), after which the first due
event probes it; meanwhile a never-tried event may probe it too, at most every
PROBE_INTERVAL seconds, instead of a flood of doomed requests. An event that failed
because the CRM was down waits for the CRM, not for itself: its next try is at most
CRM_BACKOFF_CAP away too, so once a probe gets through the whole backlog is due. Any
other refusal (4xx) only holds back that call, with the event's own back-off (up to an
hour).

Who sends when: the deliverer started by a hook keeps running while events are due
within LINGER seconds or new events keep coming (each hook wakes it through the spool's
FIFO); after LINGER seconds with neither it exits. As the CRM's back-off never exceeds
CRM_BACKOFF_CAP < LINGER, it stays, probing, for as long as an outage lasts with events
pending. `callexchange webhooks deliver --for 50`, run every minute by the systemd timer
(or cron), takes over whatever no deliverer is running for (after a reboot, a crash): it
stays up to 50 s while events are due, so probes go out at least every CRM_BACKOFF_CAP
seconds either way.

A full or read-only disk never stops it: a delivery state it cannot write is kept in
memory (the event is still sent, retried and ordered), and the reserve the hooks spend
on a full disk is refilled when space comes back (spool.py).

`start_deliverer` is called by the hook: this module's top level imports only what the
hook can afford; requests and json are imported by the deliverer process itself.
"""

import os
import sys
import time

from callexchange.statedir import atomic_write
from callexchange.webhooks.retry import (MAX_AGE, Attempt, backoff_delay, classify, crm_unwell,
                                         parse_retry_after)
from callexchange.webhooks.signing import request_headers, signing_key
from callexchange.webhooks.spool import Spool


PROBE_INTERVAL = 5.0          # while the CRM backs off, a new event may probe it this often
CRM_BACKOFF_CAP = 30.0        # a CRM that is down is probed at least this often
LINGER = 60.0                 # the background deliverer stays this long without work
LOCK_WAIT = 10.0              # a new deliverer waits this long for an exiting one
MAX_RESPONSE_BYTES = 1 << 20  # read (and discard) at most this much of a CRM reply


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
        # What could not be written (a full or read-only disk): kept here instead.
        self._unsaved = {}          # pending event name -> its delivery state
        self._settled = set()       # delivered or dead, but its file could not be moved
        self._endpoint_unsaved = None
        self.disk_error = ""

    def refresh_config(self):
        """Take up an edited config file (a new [webhook] url, secret, timeout, TLS
        setting): a deliverer can run for hours. A config that no longer loads is
        ignored, the last good one kept. True when a new config was taken."""
        stamp = _file_stamp(self.config.path)
        if stamp == self._config_stamp:
            return False
        self._config_stamp = stamp
        from callexchange.config import ConfigError, load_config
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
        backlog of thousands is scanned on every wake-up: stat, not read and parse), or
        the state kept in memory when it could not be written. Raises
        FileNotFoundError, ValueError, OSError."""
        status = os.stat(os.path.join(self.spool.new, name))
        if name in self._unsaved:
            return dict(self._unsaved[name])
        version = (status.st_ino, status.st_mtime_ns, status.st_size)
        cached = self._cache.get(name)
        if cached is None or cached[0] != version:
            cached = self._cache[name] = (version, self.spool.read(name))
        return dict(cached[1])

    def _chains(self):
        chains = self.spool.chains()
        names = {entry.name for chain in chains for entry in chain}
        if self._settled or self._unsaved:
            self._settled &= names
            self._unsaved = {k: v for k, v in self._unsaved.items() if k in names}
            chains = [[e for e in chain if e.name not in self._settled] for chain in chains]
            chains = [chain for chain in chains if chain]
        if len(self._cache) > 2 * len(names) + 100:
            self._cache = {k: v for k, v in self._cache.items() if k in names}
        return chains

    def _disk_trouble(self, doing, error):
        if not self.disk_error:  # the first of a pass says most
            self.disk_error = "cannot %s: %s (kept in memory)" % (
                doing, error.strerror or error)

    def _store(self, name, record):
        """Write the delivery state of a pending event; in memory if the disk refuses."""
        try:
            self.spool.update(name, record)
        except FileNotFoundError:
            self._unsaved.pop(name, None)
        except OSError as error:
            self._unsaved[name] = dict(record)
            self._disk_trouble("record the attempt of %s" % name, error)
        else:
            self._unsaved.pop(name, None)

    def _forget(self, name):
        """Delivered: remove the event; if the disk refuses, never send it again."""
        try:
            self.spool.remove(name)
        except OSError as error:
            self._settled.add(name)
            self._disk_trouble("remove delivered %s" % name, error)
        self._unsaved.pop(name, None)

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
        headers = request_headers(record, key, self.clock())
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
        """The CRM's back-off: {"failures", "next_at", "last_at", "since", "last_error"},
        {} when the CRM is not known to be down."""
        import json

        if self._endpoint_unsaved is not None:
            return dict(self._endpoint_unsaved)
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
        try:
            if not state:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            else:
                atomic_write(path, json.dumps(state), owner=self.spool.owner(), durable=False)
        except OSError as error:
            self._endpoint_unsaved = dict(state)
            self._disk_trouble("record the CRM's back-off", error)
            return
        self._endpoint_unsaved = None

    @staticmethod
    def blocked_until(endpoint):
        """Until when the CRM's back-off holds every send (0: it does not). A state
        written by an older version may hold a longer back-off: never past
        CRM_BACKOFF_CAP after the last try, unless the CRM itself asked (Retry-After)."""
        next_at = endpoint.get("next_at", 0)
        if endpoint.get("retry_after"):
            return next_at
        return min(next_at, endpoint.get("last_at", 0) + CRM_BACKOFF_CAP)

    # --- passes over the spool ---

    def deliver(self, all_now=False):
        """Send everything that is due now, per call in order, until nothing due is left
        or the CRM is down. `all_now` ignores back-off (events and endpoint); each event is
        tried at most once per call. Returns a dict of counts: delivered, retry, dead,
        gone, and `blocked` (True when the CRM's back-off kept everything waiting)."""
        summary = {"delivered": 0, "retry": 0, "dead": 0, "gone": 0, "blocked": False,
                   "last_error": ""}
        tried = set()
        self.disk_error = ""
        self.spool.sweep_tmp()  # (real time: it compares with files' mtimes)
        self.spool.refill_reserve()
        while True:
            progress, stop = self._pass(all_now, tried, summary)
            if stop or not progress:
                if self.disk_error:
                    summary["disk_error"] = self.disk_error
                return summary

    def _pass(self, all_now, tried, summary):
        now = self.clock()
        endpoint = self.endpoint_state()
        # While the CRM is backing off, a never-tried event may go as a probe (one per
        # PROBE_INTERVAL): a new call's event finds out soon that the CRM is back.
        blocked = not all_now and self.blocked_until(endpoint) > now
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
                if not all_now and due_at(record) > now:
                    break
                if blocked:
                    if probed or record.get("attempts", 0):
                        break
                    probed = True
                tried.add(entry.name)
                attempt = self.send(record)
                now = self.clock()
                if attempt.outcome == "delivered":
                    self._forget(entry.name)
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
                    wait = min(CRM_BACKOFF_CAP, backoff_delay(failures, self.random()))
                    state = {"failures": failures, "last_at": now,
                             "since": endpoint.get("since", now), "last_error": attempt.error}
                    if attempt.retry_after is not None and attempt.retry_after > wait:
                        wait = attempt.retry_after
                        state["retry_after"] = True  # the CRM asked: honoured in full
                    state["next_at"] = now + wait
                    self._save_endpoint(state)
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
        if attempt.endpoint_down:
            # The CRM is down, not this event: it goes with the CRM's next probe.
            wait = min(wait, CRM_BACKOFF_CAP)
        retry_after = attempt.retry_after is not None and attempt.retry_after > wait
        if retry_after:
            wait = attempt.retry_after
        next_at = now + wait
        if next_at >= deadline:
            # One last try just before the 24 hours are up (or none, if the CRM's own
            # Retry-After points past them: the next pass buries it).
            next_at = deadline if attempt.retry_after is not None else max(now, deadline - 1)
        record.update(attempts=attempts, next_at=next_at, last_attempt_at=now,
                      last_error=attempt.error, last_status=attempt.status)
        record.pop("retry_after", None)
        if retry_after:
            record["retry_after"] = True  # the CRM asked for this pause: not capped
        self._store(name, record)

    def _bury(self, name, record, reason, now, status=None):
        record.update(dead_at=now, dead_reason=reason)
        if status is not None:
            record["last_status"] = status
        try:
            self.spool.bury(name, record)
        except FileNotFoundError:
            pass
        except OSError as error:
            # Moved to dead/ with its old state, or not moved at all: either way this
            # run sends it no more.
            self._settled.add(name)
            self._disk_trouble("move %s to dead/" % name, error)
        self._unsaved.pop(name, None)

    def _bury_unreadable(self, name):
        try:
            os.makedirs(self.spool.dead_dir, exist_ok=True)
            os.rename(os.path.join(self.spool.new, name), os.path.join(self.spool.dead_dir, name))
        except FileNotFoundError:
            pass
        except OSError as error:
            self._settled.add(name)
            self._disk_trouble("move unreadable %s to dead/" % name, error)

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
            when = min(due_at(record),
                       record.get("window_start", record.get("occurred", 0)) + MAX_AGE)
            due = when if due is None else min(due, when)
            fresh = fresh or not record.get("attempts")
        if due is None:
            return None
        endpoint = self.endpoint_state()
        blocked_until = self.blocked_until(endpoint)
        if fresh:  # a never-tried event may probe the CRM
            blocked_until = min(blocked_until, endpoint.get("last_at", 0) + PROBE_INTERVAL)
        return max(due, blocked_until)

    def serve(self, linger=LINGER, wait=None, all_now=False, fd=None, until=None):
        """Deliver until nothing is due within `linger` seconds and no event came for
        `linger` seconds, woken by hooks through the spool's FIFO; return the counts of
        every pass added up (see `deliver`). The caller holds the spool lock. `all_now`
        applies to the first pass. `fd`: the FIFO, if the caller opened it already (it is
        closed on return). `wait(fd, seconds)` waits for a wake-up, True if one came
        (select() on the FIFO; injectable for tests, with the clock).

        `until` (a time of the clock; the timer's run): stay only while something is due
        before then, never waiting for new events on an empty spool, and return by then.
        """
        import select

        def default_wait(fd, seconds):
            return bool(select.select([fd], [], [], seconds)[0])

        def horizon():
            return linger if until is None else until - self.clock()

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
                if summary.get("disk_error"):
                    total["disk_error"] = summary["disk_error"]
                due = self.next_due()
                if due is not None and due - self.clock() <= horizon():
                    wait(fd, max(0.0, due - self.clock()))
                    continue
                # Nothing due soon (an empty spool, or a CRM asking for a long pause):
                # stay for the next calls' events, which wake us (a cold start costs the
                # import of requests, ~100 ms; during an outage each new event is a
                # probe), unless none comes for `linger` seconds.
                if until is None and linger > 0 and wait(fd, linger):
                    continue
                # Stop listening first, then look once more: an event published before
                # this look is seen here; one published after it found no listener, so
                # its hook started a deliverer, which takes over once we exit.
                os.close(fd)
                fd = None
                due = self.next_due()
                if due is not None and due - self.clock() <= max(0.0, horizon()):
                    fd = self.spool.listen()
                    continue
                return total
        finally:
            if fd is not None:
                os.close(fd)


def due_at(record):
    """When a pending event may be tried next. One whose last try found the CRM unwell
    waits for the CRM, not for itself: at most CRM_BACKOFF_CAP after that try (records
    of older versions may hold hours), unless the CRM's Retry-After asked for longer."""
    next_at = record.get("next_at", 0)
    if (record.get("attempts") and not record.get("retry_after")
            and crm_unwell(record.get("last_status"))):
        next_at = min(next_at, record.get("last_attempt_at", next_at) + CRM_BACKOFF_CAP)
    return next_at


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
    from callexchange.config import ConfigError, load_config

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


# lib/, for the fresh interpreter (this file is lib/callexchange/webhooks/deliverer.py).
_LIB_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# (sys.path[0] is "" under -c: the current directory; lib/ takes its place.)
_BOOT = ("import sys; sys.path[0] = sys.argv[1]; "
         "from callexchange.webhooks.deliverer import background_main; "
         "sys.exit(background_main(sys.argv[2]))")


def start_deliverer(config_path, python=None):
    """Start a detached deliverer: double fork, new session, in /, stdio on /dev/null,
    every other descriptor closed (Asterisk waits for the AGI's stdout to close), exec a
    fresh interpreter. Returns once the intermediate child is reaped (well under a millisecond)."""
    python = python or sys.executable
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")  # nothing of Asterisk's current directory: not a path to import
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 1 << 16)
            os.execv(python, [python, "-c", _BOOT, _LIB_DIR, config_path])
        finally:
            os._exit(127)
    os.waitpid(pid, 0)
