"""The state dir (`[state] dir`): which file lives where, the one atomic write, and the one
ownership rule. Every module that keeps state on disk names its place through `StateDir`
and replaces files through `atomic_write` / `atomic_file`, or, for the small counts
rewritten on every call, `write_record` / `read_record` (atomic too, without a rename).

Layout::

    ani/               caller-ID usage counts, one JSON file per day       calls.ani
                       (and its .synced mark: see "deferred syncs")
    idempotency/       first replies, for Idempotency-Key replays           http.idempotency
    dedupe/            first replies, for repeated calls                    calls.endpoint
    numbers/           carrier names, sharded from phonenumbers' data        calls.numbers
    quota/             per-key call counts (today's, the last minute's)     calls.quota
    recordings-index/  the index of the recordings archive                  recordings.index
    webhooks/          the webhook spool (Asterisk's user writes it)        webhooks.spool
    webhooks/hangups/  one empty file per call whose hangup the hook saw   webhooks.hook
                       (named by its uniqueid), read by the duplicate rule  calls.duplicates

Ownership: the gateway runs as two users (the web server's, and Asterisk's for the hook)
and the admin runs `callexchange` as root. What root creates in a directory that belongs
to someone else is given to that owner (`owner_for`), so the services can still read and
replace it.

Imported by the hook (`python3 -S`, a 50 ms budget): stdlib only, nothing but `os`.

>>> StateDir("/var/lib/callexchange").ani
'/var/lib/callexchange/ani'
"""

import _thread
import os


class StateDir:
    """The places under one `[state] dir`."""

    __slots__ = ("root",)

    def __init__(self, root):
        self.root = root

    def __repr__(self):
        return "StateDir(%r)" % self.root

    def _part(self, name):
        return os.path.join(self.root, name)

    ani = property(lambda self: self._part("ani"))
    idempotency = property(lambda self: self._part("idempotency"))
    dedupe = property(lambda self: self._part("dedupe"))
    numbers = property(lambda self: self._part("numbers"))
    quota = property(lambda self: self._part("quota"))
    recordings_index = property(lambda self: self._part("recordings-index"))
    webhooks = property(lambda self: self._part("webhooks"))
    # In the spool: the only place Asterisk's user (the hook) may write.
    hangups = property(lambda self: os.path.join(self._part("webhooks"), "hangups"))

    def hangup_mark(self, uniqueid):
        """The path of call `uniqueid`'s hangup mark, or None for an id that is not one
        of ours (digits and dots only: it becomes a file name).

        >>> StateDir("/var/lib/callexchange").hangup_mark("1720039056.22191")
        '/var/lib/callexchange/webhooks/hangups/1720039056.22191'
        >>> StateDir("/s").hangup_mark("../keys") is None
        True
        """
        if (not uniqueid or len(uniqueid) > 64 or uniqueid.startswith(".")
                or not all(c in "0123456789." for c in uniqueid)):
            return None
        return os.path.join(self.hangups, uniqueid)


def owner_for(directory):
    """(uid, gid) to give to what we create in `directory` (or, if it does not exist yet,
    in its nearest existing parent), when we run as root and that directory belongs to
    someone else; None otherwise (nothing to change).

    >>> owner_for("/") is None   # root's own directory
    True
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    path = os.path.abspath(directory)
    while True:
        try:
            status = os.stat(path)
            break
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
    return None if status.st_uid == 0 else (status.st_uid, status.st_gid)


def give(path, owner):
    """chown `path` to `owner` ((uid, gid) or None: nothing to do)."""
    if owner is not None:
        os.chown(path, *owner)


def locked(directory, name="usage.lock"):
    """An fd holding an exclusive flock on `directory`/`name` (both made when missing);
    closing it releases the lock. The directory is made only when the open finds it
    missing: a makedirs per call cost a mkdir and a stat on every request."""
    import fcntl

    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def sweep_old_files(directory, marker, every, max_age, now, matches):
    """Delete the files of `directory` whose name `matches` and whose mtime is more than
    `max_age` seconds before `now`, at most once per `every` seconds: the mtime of
    `directory`/`marker` says when the last sweep ran. A file that goes or cannot be
    removed meanwhile is left to the next sweep."""
    stamp = os.path.join(directory, marker)
    try:
        if now - os.stat(stamp).st_mtime < every:
            return
    except FileNotFoundError:
        pass
    with open(stamp, "w"):
        pass
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if matches(entry.name) and now - entry.stat().st_mtime > max_age:
                    os.unlink(entry.path)
            except OSError:
                pass


def fsync_directory(path):
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class atomic_file:
    """Write a file that appears whole or not at all, even if the writer is killed::

        with atomic_file(final) as handle:      # a binary file object
            handle.write(data)

    The data goes to `temporary` (by default a hidden name beside `final`, unique per
    process and thread), is fsync()ed when `durable`, gets `mode` and `owner`, and is
    renamed over `final` when the block ends without an exception; on an exception the
    temporary file is removed and `final` is untouched. `sync_directory` also fsyncs the
    directory of `final`, so the rename itself survives a power loss.
    """

    def __init__(self, final, *, temporary=None, mode=0o640, owner=None, durable=True,
                 sync_directory=False):
        if temporary is None:
            import _thread
            head, tail = os.path.split(final)
            temporary = os.path.join(head, ".%s.%d.%d.tmp" % (tail, os.getpid(),
                                                              _thread.get_ident()))
        self.final = final
        self.temporary = temporary
        self.mode = mode
        self.owner = owner
        self.durable = durable
        self.sync_directory = sync_directory
        self._handle = None

    def __enter__(self):
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
        try:
            os.fchmod(fd, self.mode)  # whatever the umask
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            self._handle = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.temporary)
            raise
        return self._handle

    def __exit__(self, exc_type, exc, tb):
        handle, self._handle = self._handle, None
        try:
            if exc_type is None:
                handle.flush()
                if self.durable:
                    os.fsync(handle.fileno())
            handle.close()
            if exc_type is None:
                os.rename(self.temporary, self.final)
                if self.sync_directory:
                    fsync_directory(os.path.dirname(self.final) or ".")
                return False
        except BaseException:
            _unlink_quietly(self.temporary)
            raise
        _unlink_quietly(self.temporary)
        return False


def atomic_write(final, data, **options):
    """Replace `final` with `data` (bytes or str, UTF-8) atomically; the options of
    `atomic_file`. Raises OSError (ENOSPC included), leaving `final` as it was."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_file(final, **options) as handle:
        handle.write(data)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- small records rewritten on every call --------------------------------------------
#
# A record file holds two slots of the same size (a power of two, at least 4 KiB), each a
# whole copy of the record: a header line `cx-record 1 <sequence> <crc32> <length>`, the
# text, and padding. A write goes to the slot that does not hold the newest copy, with
# one pwrite() and one fdatasync() on blocks already allocated: no new inode, no rename,
# so no journal commit to wait for (measured here: ~0.1 ms, against ~1 ms and more for
# atomic_write's tmp + fsync + rename while other processes sync the same disk). A crash
# in the middle of a write leaves the other slot, the last good copy; a reader takes the
# valid slot with the highest sequence, so it never sees half a record either.
#
# A write that is not durable (`durable=False`: counts whose loss costs nothing) marks its
# header `lazy`. The next durable write overwrites the slot holding the copy before it, so
# it first fdatasync()s the lazy one: else a power loss during that write could leave the
# torn slot and a lazy slot never written back, and a durable copy already answered for
# would be lost. (Readers of the first layout ignore the extra header field.)

_RECORD_MAGIC = b"cx-record 1 "
_RECORD_SLOT = 4096
_RECORD_HEADER = 64   # room for the header line


def _record_slots(data):
    """{slot index: (sequence, text bytes, lazy)} of the valid slots, or None when `data`
    is not laid out as a record (a plain file, e.g. written by an older version); `lazy`:
    written without an fdatasync."""
    from binascii import crc32

    size = len(data) // 2
    if size < _RECORD_SLOT or size & (size - 1) or len(data) != 2 * size:
        return None
    slots, laid_out = {}, False
    for index in (0, 1):
        slot = data[index * size:(index + 1) * size]
        if not slot.startswith(_RECORD_MAGIC):
            continue
        laid_out = True
        header, _, rest = slot.partition(b"\n")
        fields = header[len(_RECORD_MAGIC):].split(b" ")
        try:
            sequence, checksum, length = (int(field, base) for field, base in
                                          zip(fields, (10, 16, 10)))
        except ValueError:
            continue
        text = rest[:length]
        if len(text) == length and crc32(text) == checksum:
            slots[index] = (sequence, text, fields[3:4] == [b"lazy"])
    return slots if laid_out else None


def _record_slot(sequence, text, size, lazy=False):
    from binascii import crc32

    slot = b"%s%d %08x %d%s\n%s\n" % (_RECORD_MAGIC, sequence, crc32(text), len(text),
                                      b" lazy" if lazy else b"", text)
    return slot + b" " * (size - len(slot) - 1) + b"\n"


def read_record(path):
    """The text last written to `path` by write_record (a file laid out otherwise, e.g. by
    atomic_write or an older version, is read whole; "" when no slot is valid), or None
    when there is no file. Takes no lock: a writer never leaves half a record."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    slots = _record_slots(data)
    if slots is None:
        return data.decode("utf-8", "replace")
    if not slots:
        return ""
    return max(slots.values())[1].decode("utf-8", "replace")


def write_record(path, text, *, mode=0o640, owner=None, durable=True, defer_sync=False):
    """Replace the record at `path` by `text` in place, atomically, and durably unless
    `durable` is false (see above). The caller holds the lock that orders the writers.
    A missing file, one laid out otherwise, or a text too long for its slots is laid out
    afresh with atomic_write (mode, owner). Raises OSError, leaving the last record.

    `defer_sync`: durable, but without waiting for the disk now: the copy is written (as
    a lazy one, so that others treat it as such) and a `PendingSync` returned, whose
    `sync()` the caller must call before it acts on the copy being on disk (e.g. before
    it replies). The caller may release its lock first: the wait for the disk is then
    out of everyone's way (and overlaps whatever the caller does meanwhile)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        fd = None
    sequence = 1
    if fd is not None:
        try:
            info = os.fstat(fd)
            size = info.st_size
            slots = _record_slots(os.pread(fd, size, 0)) if size <= 1 << 24 else None
            if slots:
                newest = max(slots, key=lambda index: slots[index][0])
                sequence = slots[newest][0] + 1
            if slots is not None and len(data) + _RECORD_HEADER <= size // 2:
                target = 1 - newest if slots else 0
                state = _SYNC_STATES.get((info.st_dev, info.st_ino)) if _SYNC_STATES else None
                if (durable or defer_sync) and slots and slots[newest][2] and \
                        not _known_on_disk(path, info, state, sequence - 1):
                    # The copy this write keeps must be on disk before the other is
                    # overwritten (see above).
                    os.fdatasync(fd)
                    if state is not None:
                        state.synced = max(state.synced, sequence - 1)
                os.pwrite(fd, _record_slot(sequence, data, size // 2,
                                           lazy=defer_sync or not durable),
                          target * (size // 2))
                if defer_sync:
                    state = _file_sync(path, fd, info, mode, owner)
                    state.written = max(state.written, sequence)
                    return PendingSync(state, sequence)
                if durable:
                    os.fdatasync(fd)
                    if state is not None:
                        state.synced = max(state.synced, sequence)
                return None
        finally:
            os.close(fd)
    size = _RECORD_SLOT
    while size < len(data) + _RECORD_HEADER:
        size *= 2
    atomic_write(path, _record_slot(sequence, data, size, lazy=not durable)
                 + b" " * (size - 1) + b"\n",
                 mode=mode, owner=owner, durable=durable or defer_sync)
    return PendingSync(None, sequence) if defer_sync else None


# --- deferred syncs -------------------------------------------------------------------
#
# A deferred write (`write_record(defer_sync=True)`) is marked lazy on disk: whoever
# writes the file next must make it durable before overwriting the other slot, unless it
# knows that copy is on disk already:
#
# * in this process, _FileSync remembers per file the newest copy this process wrote
#   (`written`) and the newest it knows to be on disk (`synced`). It holds an fd of the
#   file open, so that the inode (its key) cannot be freed and given to another file
#   while it is remembered. Entries of files deleted meanwhile (last week's counts) are
#   dropped when a new file is first written with a deferred sync;
# * across processes (two daemons, a CGI per call), each sync is noted in a mark file
#   beside the record, `<record>.synced`: "<inode> <sequence>", written after the
#   fdatasync returned, itself never synced (a mark lost in a crash costs one sync; one
#   that survived names a copy already on disk). A writer skips its sync only when the
#   mark names exactly the newest copy of exactly this file.
#
# `_thread`, not `threading`: the hook imports this module.

MARK_SUFFIX = ".synced"
_MARK_BYTES = 48
_SYNC_STATES = {}
_SYNC_STATES_LOCK = _thread.allocate_lock()


class _FileSync:
    __slots__ = ("fd", "mark_fd", "inode", "written", "synced", "lock")

    def __init__(self, fd, mark_fd, inode):
        self.fd, self.mark_fd, self.inode = fd, mark_fd, inode
        self.lock = _thread.allocate_lock()
        self.written = self.synced = 0

    def close(self):
        for fd in (self.fd, self.mark_fd):
            if fd is not None:
                os.close(fd)


def _file_sync(path, fd, info, mode, owner):
    key = (info.st_dev, info.st_ino)
    state = _SYNC_STATES.get(key)
    if state is not None:
        return state
    with _SYNC_STATES_LOCK:
        for old_key, old in list(_SYNC_STATES.items()):
            if os.fstat(old.fd).st_nlink == 0:
                del _SYNC_STATES[old_key]
                old.close()
        if key not in _SYNC_STATES:
            try:
                mark_fd = os.open(path + MARK_SUFFIX, os.O_RDWR | os.O_CREAT, mode)
                if owner is not None:
                    os.fchown(mark_fd, *owner)
            except OSError:
                mark_fd = None   # no mark: other processes sync again, that is all
            _SYNC_STATES[key] = _FileSync(os.dup(fd), mark_fd, info.st_ino)
        return _SYNC_STATES[key]


def _known_on_disk(path, info, state, sequence):
    """True when copy `sequence` of the record at `path` (the inode of `info`) is known to
    be on disk: this process synced it (`state`, its _FileSync or None), or the mark file
    says that another did."""
    if state is not None and state.synced >= sequence:
        return True
    return _synced_mark(path, info) == sequence


def _synced_mark(path, info):
    """The sequence the mark file beside `path` names as on disk for this file (the
    inode of `info`), or None."""
    try:
        fd = os.open(path + MARK_SUFFIX, os.O_RDONLY)
    except OSError:
        return None
    try:
        fields = os.pread(fd, _MARK_BYTES, 0).split()
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        inode, sequence = int(fields[0]), int(fields[1])
    except (IndexError, ValueError):
        return None
    return sequence if inode == info.st_ino else None


if hasattr(os, "register_at_fork"):
    # A child must not inherit locks that another thread of its parent held at the fork.
    os.register_at_fork(after_in_child=_SYNC_STATES.clear)


class PendingSync:
    """A record copy written but perhaps not yet on disk. `sync()` returns once it is
    (with every copy of that file this process wrote before it: the threads waiting on
    one file share one fdatasync); idempotent and thread-safe. Raises the OSError of the
    fdatasync, then and on every later call."""

    __slots__ = ("state", "sequence", "done", "error")

    def __init__(self, state, sequence):
        self.state, self.sequence = state, sequence
        self.done = state is None   # a new layout: atomic_write synced it already
        self.error = None

    def sync(self):
        if self.error is not None:
            raise self.error
        if self.done:
            return
        state = self.state
        with state.lock:
            if state.synced < self.sequence:
                upto = state.written   # every copy written so far (pwrites that returned)
                try:
                    os.fdatasync(state.fd)
                except OSError as error:
                    self.error = error
                    raise
                state.synced = max(state.synced, upto)
                if state.mark_fd is not None:
                    try:
                        os.pwrite(state.mark_fd, (b"%d %d" % (state.inode, state.synced))
                                  .ljust(_MARK_BYTES - 1) + b"\n", 0)
                    except OSError:
                        pass   # the next writer of another process syncs once more
        self.done = True
