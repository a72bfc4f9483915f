"""The deliverer: sends what the spool holds to the CRM, in order per call.

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

`start_deliverer` is called by the hook: this module's top level imports only what the
hook can afford; requests and json are imported by the deliverer process itself.
"""

import os
import sys
import time

from callexchange.statedir import atomic_write
from callexchange.webhooks.retry import MAX_AGE, Attempt, backoff_delay, classify, parse_retry_after
from callexchange.webhooks.signing import request_headers, signing_key
from callexchange.webhooks.spool import Spool


PROBE_INTERVAL = 5.0          # while the CRM backs off, a new event may probe it this often
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
        atomic_write(path, json.dumps(state), owner=self.spool.owner(), durable=False)

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
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from callexchange.webhooks.deliverer import background_main; "
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
