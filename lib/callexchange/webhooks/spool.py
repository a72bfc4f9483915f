"""The durable webhook spool: every event is on disk, complete, before anyone sends it.

Layout, under `[state] dir`/webhooks/ (the Maildir pattern of CPython's mailbox.py)::

    tmp/        events being written: a file here is never sent, and one older than
                STALE_TMP_SECONDS was left by a writer that died (swept by the deliverer)
    new/        complete events waiting for delivery, one JSON file each
    dead/       events given up (no 2xx within 24 hours, or 410 Gone); `webhooks retry`
                moves them back to new/
    reserve/    disk space kept for new events: RESERVE_CHUNKS files of RESERVE_CHUNK
                bytes, allocated by the deliverer; a hook that finds the disk full
                deletes one and writes its event into the space it frees
    wake        a FIFO: a hook writes a byte to wake the running deliverer
    deliver.lock  flock()ed by the one deliverer at work; holds its pid
    endpoint.json the CRM's back-off state, shared by successive deliverer runs
    deliverer.err the traceback of the last deliverer crash, if any

Writing (the hook, `add`): the record goes to tmp/, is fsync()ed, renamed into new/, and
new/ is fsync()ed. A rename is atomic, so a writer killed at any instant (kill -9, power
loss) leaves either the complete event in new/ or nothing there. A write that fails
leaves nothing either (the tmp file is removed); one that fails because the disk is full
(ENOSPC, EDQUOT) releases a chunk of the reserve and is tried again, so a full state
disk costs no event while the reserve lasts (RESERVE_CHUNKS * RESERVE_CHUNK bytes: some
250 events on a filesystem of 4 KiB blocks, beyond what the deliverer drains meanwhile).
The deliverer refills the reserve while at least RESERVE_MIN_FREE bytes stay free.

Reading (the deliverer): peek -> POST -> delete. An event leaves new/ only after the CRM
answered 2xx (`remove`) or it was given up (`bury`); a deliverer killed mid-send leaves
it in place and the next run sends it again: at least once, never half.

File names in new/ and dead/ sort by creation and carry what ordering needs, so a scan
reads names only: `<created ns, 19 digits>.<pid>.<event>.<call key>`. Per call, a connect
always goes before the hangup (`EVENT_RANK`), then by creation time.

Records are JSON objects. The hook writes them with `dumps_compact` (no `json` import:
its `re` dependency costs the hook ~9 ms); everything else reads and writes with `json`.

This module is imported by the hook: stdlib only, nothing slow to import.
"""

import errno
import os
import time

from callexchange.statedir import StateDir, atomic_file, atomic_write, give, owner_for

EVENT_RANK = {"connect": 0, "hangup": 1}
STALE_TMP_SECONDS = 600
RESERVE_CHUNKS = 16               # the reserve: 16 files...
RESERVE_CHUNK = 64 * 1024         # ...of 64 KiB: 1 MiB, each file also one inode
RESERVE_MIN_FREE = 4 * 1024 * 1024  # refilled only while this much stays free for others
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
WAKE = b"!"            # a hook's wake-up: a new event
WAKE_ALL_NOW = b"*"    # the admin's: send everything now, back-off ignored
_KEY_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-.")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\b": "\\b", "\f": "\\f"}



class Entry(tuple):
    """One spooled event, from its file name: (name, created_ns, event, call_key).
    (A tuple subclass rather than a namedtuple: `collections` is not imported by the hook.)"""

    __slots__ = ()

    def __new__(cls, name, created_ns, event, call_key):
        return tuple.__new__(cls, (name, created_ns, event, call_key))

    name = property(lambda self: self[0])
    created_ns = property(lambda self: self[1])
    event = property(lambda self: self[2])
    call_key = property(lambda self: self[3])

    def __repr__(self):
        return "Entry(%r)" % (self[0],)


def call_key(uniqueid):
    """The file-name form of a call's uniqueid: letters, digits, '.' and '-' kept, any
    other character replaced by '-', at most 100 characters.

    >>> call_key("1732700000.483920174622")
    '1732700000.483920174622'
    """
    key = "".join(c if c in _KEY_CHARS else "-" for c in uniqueid)[:100]
    return key or "-"


def _encode_string(text):
    out = []
    for c in text:
        escape = _ESCAPES.get(c)
        if escape is not None:
            out.append(escape)
        elif c < " ":
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def dumps_compact(value):
    """JSON text of dicts, lists, str, int, bool and None, exactly as
    `json.dumps(value, separators=(",", ":"), ensure_ascii=False)` writes it (keys in
    insertion order, UTF-8 kept, control characters escaped).

    >>> dumps_compact({"uniqueid": "1.2", "duration": 0, "crm_id": "caf\\u00e9"})
    '{"uniqueid":"1.2","duration":0,"crm_id":"café"}'
    """
    if isinstance(value, str):
        return _encode_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, dict):
        return "{" + ",".join("%s:%s" % (_encode_string(str(k)), dumps_compact(v))
                              for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps_compact(v) for v in value) + "]"
    raise TypeError("cannot encode %r" % type(value).__name__)


class Spool:
    """The spool directory `root` (created on first write)."""

    def __init__(self, root):
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        self.new = os.path.join(root, "new")
        self.dead_dir = os.path.join(root, "dead")
        self.reserve_dir = os.path.join(root, "reserve")
        self.wake_path = os.path.join(root, "wake")
        self.lock_path = os.path.join(root, "deliver.lock")
        self.endpoint_path = os.path.join(root, "endpoint.json")
        self.crash_path = os.path.join(root, "deliverer.err")

    @classmethod
    def for_state_dir(cls, state_dir):
        """The spool of a gateway whose `[state] dir` is `state_dir`."""
        return cls(StateDir(state_dir).webhooks)

    def ensure(self):
        """Create the directories and the wake FIFO if missing."""
        for path in (self.tmp, self.new, self.dead_dir):
            if not os.path.isdir(path):
                os.makedirs(path, mode=0o750, exist_ok=True)
                self._give(path)
        try:
            os.mkfifo(self.wake_path, 0o660)
            self._give(self.wake_path)
        except FileExistsError:
            pass

    def owner(self):
        """(uid, gid) to give the files we create (`statedir.owner_for`): an admin running
        `callexchange webhooks ...` as root in Asterisk's spool must leave files the hook
        and the timer, as Asterisk's user, can still read and replace. None otherwise."""
        return owner_for(self.root)

    def _give(self, path):
        give(path, self.owner())

    # --- writing (the hook) ---

    def add(self, record, clock=time.time_ns):
        """Publish `record` (a dict with at least "event" and "call") durably; return its
        name in new/. Raises OSError when it cannot (nothing is left in tmp/ then); on a
        full disk it first spends the reserve, one chunk at a time."""
        event = record["event"]
        if event not in EVENT_RANK:
            raise ValueError("unknown event %r" % event)
        created_ns = clock()
        name = "%019d.%d.%s.%s" % (created_ns, os.getpid(), event, call_key(record["call"]))
        record = dict(record, created_ns=created_ns)
        data = dumps_compact(record).encode("utf-8")
        ensured = False
        while True:
            try:
                self._publish(name, data)
                return name
            except FileNotFoundError:
                if ensured:
                    raise
                ensured = True
                self._ensure_quietly()
            except OSError as error:
                if error.errno not in DISK_FULL or not self.release_reserve():
                    raise

    def _publish(self, name, data):
        # Maildir: written and fsynced in tmp/, then renamed into new/ (and new/ fsynced);
        # on any failure the tmp file is removed.
        with atomic_file(os.path.join(self.new, name), temporary=os.path.join(self.tmp, name),
                         sync_directory=True) as handle:
            handle.write(data)

    def _ensure_quietly(self):
        try:
            self.ensure()
        except OSError as error:
            if error.errno not in DISK_FULL or not self.release_reserve():
                raise

    # --- the reserve: space for new events on a full disk ---

    def release_reserve(self):
        """Free one chunk of the reserve (a hook that found the disk full). True when one
        was freed, False when the reserve is spent."""
        try:
            names = sorted(os.listdir(self.reserve_dir))
        except OSError:
            return False
        for name in names:
            try:
                os.unlink(os.path.join(self.reserve_dir, name))
                return True
            except FileNotFoundError:
                continue  # another hook took that one
            except OSError:
                return False
        return False

    def reserve_bytes(self):
        """Bytes held in the reserve now (0 when it is spent), None when there is no
        reserve to read (not made yet, or not readable by this user)."""
        total = 0
        try:
            names = os.listdir(self.reserve_dir)
        except OSError:
            return None
        for name in names:
            try:
                total += os.stat(os.path.join(self.reserve_dir, name)).st_blocks * 512
            except OSError:
                continue
        return total

    def free_space(self):
        """(bytes, inodes) free for an unprivileged writer on the spool's filesystem
        (inodes None where the filesystem has no such limit), or None when the spool
        does not exist yet."""
        try:
            status = os.statvfs(self.root)
        except OSError:
            return None
        # (Some filesystems, btrfs among them, have no inode limit and report 0 of 0.)
        inodes = status.f_favail if status.f_files else None
        return status.f_bavail * status.f_frsize, inodes

    def refill_reserve(self):
        """Allocate the missing chunks of the reserve (the deliverer, every pass) while
        RESERVE_MIN_FREE bytes stay free for everything else on the disk. Returns the
        number of chunks made. Never raises for a full or read-only disk."""
        try:
            present = set(os.listdir(self.reserve_dir))
        except FileNotFoundError:
            try:
                os.makedirs(self.reserve_dir, mode=0o750, exist_ok=True)
                self._give(self.reserve_dir)
            except OSError:
                return 0
            present = set()
        except OSError:
            return 0
        made = 0
        for number in range(RESERVE_CHUNKS):
            name = "chunk.%02d" % number
            if name in present:
                continue
            free = self.free_space()
            if (free is None or free[0] < RESERVE_CHUNK + RESERVE_MIN_FREE
                    or (free[1] is not None and free[1] < 100)):
                break
            try:
                with atomic_file(os.path.join(self.reserve_dir, name), durable=False,
                                 owner=self.owner()) as handle:
                    os.posix_fallocate(handle.fileno(), 0, RESERVE_CHUNK)  # not a hole
            except OSError:
                break
            made += 1
        return made

    # --- reading (the deliverer and the admin tool) ---

    @staticmethod
    def parse_name(name):
        """Entry for a file name, or None for a name that is not an event's."""
        parts = name.split(".", 3)
        if len(parts) != 4 or not parts[0].isdigit() or parts[2] not in EVENT_RANK:
            return None
        return Entry(name, int(parts[0]), parts[2], parts[3])

    def _entries(self, directory):
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        entries = [entry for entry in map(self.parse_name, names) if entry is not None]
        entries.sort(key=lambda e: (e.created_ns, e.name))
        return entries

    def pending(self):
        """Every event in new/, oldest first."""
        return self._entries(self.new)

    def dead(self):
        """Every event in dead/, oldest first."""
        return self._entries(self.dead_dir)

    def chains(self):
        """The pending events grouped per call, each call's events in delivery order
        (connect before hangup, then by creation); calls ordered by their first event's
        creation. A call's later events must wait until its first is delivered or dead."""
        per_call = {}
        for entry in self.pending():
            per_call.setdefault(entry.call_key, []).append(entry)
        chains = [sorted(entries, key=lambda e: (EVENT_RANK[e.event], e.created_ns, e.name))
                  for entries in per_call.values()]
        chains.sort(key=lambda chain: (chain[0].created_ns, chain[0].name))
        return chains

    def read(self, name, dead=False):
        """The record (dict) of event `name`. Raises FileNotFoundError, ValueError."""
        import json

        directory = self.dead_dir if dead else self.new
        with open(os.path.join(directory, name), "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))

    def _replace(self, directory, name, record):
        """Atomically replace the record of `name` in `directory` (tmp, fsync, rename)."""
        import json

        data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        tmp_path = os.path.join(self.tmp, "%s.update.%d" % (name, os.getpid()))
        try:
            os.unlink(tmp_path)  # a leftover of a writer killed before its rename
        except FileNotFoundError:
            pass
        atomic_write(os.path.join(directory, name), data, temporary=tmp_path,
                     owner=self.owner())

    def update(self, name, record):
        """Store the delivery state of a pending event (attempts, next try, last error)."""
        self._replace(self.new, name, record)

    def remove(self, name):
        """Delivered: forget the event. (No fsync: after a power loss at worst it is
        sent once more, which at-least-once allows.)"""
        try:
            os.unlink(os.path.join(self.new, name))
        except FileNotFoundError:
            pass

    def bury(self, name, record):
        """Give up on a pending event: move it to dead/ with its final `record`."""
        os.makedirs(self.dead_dir, mode=0o750, exist_ok=True)
        os.rename(os.path.join(self.new, name), os.path.join(self.dead_dir, name))
        self._replace(self.dead_dir, name, record)

    def revive(self, name, record):
        """Move a dead event back to new/ with `record` (its delivery state reset)."""
        os.rename(os.path.join(self.dead_dir, name), os.path.join(self.new, name))
        self._replace(self.new, name, record)

    def find(self, webhook_id_or_name):
        """(entry, is_dead) of the event with this webhook-id or file name, else None."""
        for dead, entries in ((False, self.pending()), (True, self.dead())):
            for entry in entries:
                if entry.name == webhook_id_or_name:
                    return entry, dead
        for dead, entries in ((False, self.pending()), (True, self.dead())):
            for entry in entries:
                try:
                    if self.read(entry.name, dead=dead).get("id") == webhook_id_or_name:
                        return entry, dead
                except (OSError, ValueError):
                    continue
        return None

    def sweep_tmp(self, older_than=STALE_TMP_SECONDS, now=None):
        """Delete files in tmp/ left by writers that died (older than `older_than`
        seconds). Returns how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(self.tmp, name)
            try:
                if now - os.stat(path).st_mtime >= older_than:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    # --- the deliverer's lock and wake-up FIFO ---

    def try_lock(self):
        """flock() the deliverer lock without waiting. Returns the open fd (keep it open
        while delivering; closing it releases the lock) or None if another holds it. The
        holder's pid is written into the file for `webhooks status` and the tests."""
        import fcntl

        self.ensure()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as error:
            if error.errno != errno.EROFS:
                raise
            # A read-only disk: the lock still works on a read-only descriptor, and what
            # is pending can still be sent (nothing of it can be recorded).
            fd = os.open(self.lock_path, os.O_RDONLY)
        owner = self.owner()
        if owner is not None:
            os.fchown(fd, *owner)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        try:
            # Overwritten in place (fixed width), not truncated first: on a full disk the
            # file keeps the block it has. Only `webhooks status` reads it.
            os.pwrite(fd, b"%-19d\n" % os.getpid(), 0)
        except OSError:
            pass
        return fd

    def lock_holder(self):
        """The pid of the deliverer holding the lock, or None when none does."""
        import fcntl

        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else 0
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def wake(self, all_now=False):
        """Wake the running deliverer. True if one was listening; False if none is (then
        the caller starts one). `all_now`: the admin asked for everything now, back-off
        ignored (`webhooks deliver --all-now`, `webhooks retry`)."""
        try:
            fd = os.open(self.wake_path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno in (errno.ENXIO, errno.ENOENT):
                return False
            raise
        try:
            os.write(fd, WAKE_ALL_NOW if all_now else WAKE)
        except BlockingIOError:
            pass  # the FIFO is full of wake-ups already: the deliverer is awake
        finally:
            os.close(fd)
        return True

    def listen(self):
        """Open the wake FIFO for the deliverer (O_RDWR, so that it never reads EOF when a
        hook closes its end). Returns the fd: readable when a hook has written."""
        self.ensure()
        return os.open(self.wake_path, os.O_RDWR | os.O_NONBLOCK)

    @staticmethod
    def drain(fd):
        """Empty the wake FIFO; True when one of the wake-ups asked for all now."""
        all_now = False
        try:
            while True:
                data = os.read(fd, 4096)
                if not data:
                    break
                all_now = all_now or WAKE_ALL_NOW in data
        except BlockingIOError:
            pass
        return all_now
