"""The recordings index: a number's recordings without walking the archive.

Lives in `[state] dir/recordings-index/`:

    state            what is indexed: one text file, replaced atomically (rename), with a
                     CRC-32 on its last line. Lists the segments, the mtime of the root,
                     year and month folders, and one line per day folder: the segment that
                     owns the day's entries, the folder's mtime, its count of recordings,
                     and a CRC of its sorted names.
    seg-<id>.idx     an immutable segment: the entries of some day folders, hashed by the
                     last 7 digits of each candidate number (a shorter number: all of
                     it; a name with dashed numbers has one per possible split) into
                     buckets. Header, slot table (offset, length per bucket), then one
                     zlib block per bucket, each opening with "#<id> <bucket>" so a
                     misplaced or damaged block is detected. An entry is one line,
                     `key<TAB>digits<TAB>YYYYMMDD<TAB>file name`, sorted by key.
    lock             flock(2) of the writers (refresh, merge, rebuild). Readers take none.

A lookup reads the state, refreshes it (below), then reads ONE bucket of each segment
(a few: a rebuild makes one; refreshes add small ones that are merged when their sizes
are close, so there are O(log n)), keeps the lines whose key is the phone's, whose day
the segment still owns and whose full digits pass the matching rule. Two matching
numbers always share their last 7 digits, so nothing else needs reading.

Refresh, before every lookup, cheap when nothing changed (about eight stat calls): the
root, the year and month folders of yesterday, today and tomorrow, those three day
folders and the newest indexed one (so a web server whose time zone differs from
Asterisk's still looks where recordings land), and days whose last scan was "unsettled" (modified within 2 s of the scan, so a
file added in the same timestamp tick is not missed) are compared with the recorded
mtimes; a changed root/year/month folder is listed to find new and removed children; a
changed day folder is listed, and if its names differ (CRC) its entries go into a new
segment that takes over the day. Every 10 minutes a sweep stats every folder instead
(about 1,100 stats for three years), catching changes inside old day folders. A recording
deleted since it was indexed is dropped by the caller (`forget`), which checks every hit.

Writers hold the lock, write new segments under temporary names and rename them, then
replace the state file: a reader sees the old state or the new one, whole, and the
segments it names exist (retired segments are deleted 60 s later; a reader that still
misses one reads the state again). When the lock is busy for long (a rebuild), a lookup
uses what it scanned in memory without saving it. A missing, corrupt (CRC, zlib, block
header) or foreign (other root) index is rebuilt by the lookup that finds it, which
answers from the rebuilt index; a lookup that meanwhile finds the rebuild running scans
the day folders of its from/to range directly. Correctness first, speed second.
"""

import binascii
import os
import struct
import time
import zlib

from callexchange.statedir import atomic_file, atomic_write, give, owner_for

from callexchange.recordings.names import (AUDIO_EXTENSIONS, index_key, numbers_match,
                                           parse_name, valid_date)

STATE_NAME = "state"
LOCK_NAME = "lock"
STATE_MAGIC = "cx-recordings-index 2"   # 2: every split of a dashed dst/src is keyed
SEGMENT_MAGIC = b"CXRI"
SEGMENT_VERSION = 1
HEADER = struct.Struct("<4sIIQ16s")      # magic, version, buckets, lines, id
SLOT = struct.Struct("<QI")              # block offset, block length

SETTLE_NS = 2 * 10 ** 9        # a folder modified this recently is scanned again next time
SWEEP_SECONDS = 600            # stat every folder at most this often
GRACE_SECONDS = 60             # a retired segment stays readable this long
TEMP_MAX_AGE = 3600            # leftovers of a crashed writer are removed after this
LOCK_WAIT = 0.5                # a lookup waits this long for a writer, then works in memory
SMALL_SEGMENT = 4096           # recordings: segments this small are always merged
MAX_AUTO_MERGE = 200000        # recordings: bigger merges are left to `recordings reindex`
LINES_PER_BUCKET = 512
MAX_BUCKETS = 1 << 16
REBUILD_BUCKETS = 256          # at least this many buckets (and spill partitions) in a rebuild


class CorruptIndex(Exception):
    """The index cannot be trusted: it will be rebuilt."""


class _SegmentGone(Exception):
    """A segment named by the state was retired meanwhile: read the state again."""


# --- helpers ---

def _crc(text):
    return binascii.crc32(text.encode("utf-8"))


def _bucket(key, buckets):
    return binascii.crc32(key.encode("ascii")) & (buckets - 1)


def _bucket_count(lines, minimum=1):
    count = minimum
    while count < MAX_BUCKETS and count * LINES_PER_BUCKET < lines:
        count *= 2
    return count


def _new_id():
    return os.urandom(8).hex()


def _day_path(root, day):
    return os.path.join(root, day[:4], day[4:6], day[6:])


def _recent_days(now):
    """Yesterday, today and tomorrow (local time, as the PBX names its folders),
    YYYYMMDD. Tomorrow too: the web server's time zone may be ahead of Asterisk's."""
    today = time.localtime(now)
    days = []
    for offset in (-1, 0, 1):
        # Noon of that day, normalised by mktime: right across DST changes.
        day = time.localtime(time.mktime((today.tm_year, today.tm_mon,
                                          today.tm_mday + offset, 12, 0, 0, 0, 0, -1)))
        days.append("%04d%02d%02d" % (day.tm_year, day.tm_mon, day.tm_mday))
    return days


def _is_year(name):
    return len(name) == 4 and name.isdigit() and name.isascii() and name != "0000"


def _is_month(name):
    return len(name) == 2 and name.isdigit() and name.isascii() and 1 <= int(name) <= 12


def _subdirs(path, accept):
    """Names of the sub-folders of `path` that `accept` takes (empty when it is gone)."""
    try:
        with os.scandir(path) as entries:
            return {entry.name for entry in entries
                    if accept(entry.name) and entry.is_dir(follow_symlinks=False)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _day_folder_names(month_path, year, month):
    """The names of the day folders (DD) of a month folder that are real dates."""
    return _subdirs(month_path, lambda n: len(n) == 2 and n.isdigit() and n.isascii()
                    and valid_date(year, month, int(n)))


def _walk_days(root, first_day="00000000", last_day="99999999", folders=None):
    """The day folders under `root` (YYYYMMDD) within [first_day, last_day], in order: the
    one walk of the archive, for a rebuild and for a scan without index. With `folders`
    (a dict), the mtime_ns of each year and month folder walked is recorded in it."""
    for year in sorted(_subdirs(root, _is_year)):
        if not first_day[:4] <= year <= last_day[:4]:
            continue
        year_path = os.path.join(root, year)
        if folders is not None:
            info = _stat_dir(year_path)
            if info is None:
                continue
            folders[year] = info.st_mtime_ns
        for month in sorted(_subdirs(year_path, _is_month)):
            if not first_day[:6] <= year + month <= last_day[:6]:
                continue
            month_path = os.path.join(year_path, month)
            if folders is not None:
                info = _stat_dir(month_path)
                if info is None:
                    continue
                folders[year + month] = info.st_mtime_ns
            for day in sorted(_day_folder_names(month_path, int(year), int(month))):
                if first_day <= year + month + day <= last_day:
                    yield year + month + day


def _day_names(path):
    """The recording names of a day folder, sorted (None when the folder is gone). Only
    regular files are recordings: a folder or a symlink named like one is not (no extra
    stat: the type comes with the listing)."""
    try:
        with os.scandir(path) as entries:
            return sorted(entry.name for entry in entries
                          if _indexable(entry.name) and entry.is_file(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _indexable(name):
    extension = name.rpartition(".")[2].lower()
    if extension not in AUDIO_EXTENSIONS or "\t" in name or "\n" in name or "\r" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:      # not UTF-8 on disk: cannot be put in a URL either
        return False
    return True


def _names_digest(names):
    return "%08x" % _crc("\n".join(names))


def day_lines(day, names):
    """The index lines of one day folder's recordings: one per candidate number of each
    (`RecordingName.numbers`: dst and src, or every split of dashed middle fields)."""
    lines = []
    for name in names:
        parsed = parse_name(name)
        if parsed is None:
            continue
        for digits in parsed.numbers:
            lines.append("%s\t%s\t%s\t%s" % (index_key(digits), digits, day, name))
    return lines


def _stat_dir(path, follow=False):
    """The stat of a real folder (a symlink is not followed unless `follow`), or None."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return info if (info.st_mode & 0o170000) == 0o040000 else None


# --- the state file ---

class DayRecord:
    """What the state says of one day folder: the segment that `owner`s its entries ("-"
    when it has none), the folder's `mtime_ns` when it was scanned, its `count` of
    recordings and the `digest` (CRC) of its sorted names."""

    __slots__ = ("owner", "mtime_ns", "count", "digest")

    def __init__(self, owner, mtime_ns, count, digest):
        self.owner = owner
        self.mtime_ns = mtime_ns
        self.count = count
        self.digest = digest

    def copy(self):
        return DayRecord(self.owner, self.mtime_ns, self.count, self.digest)

    def __eq__(self, other):
        return isinstance(other, DayRecord) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self):
        return "DayRecord(%r, %d, %d, %r)" % (self.owner, self.mtime_ns, self.count, self.digest)


class State:
    """The parsed state file. Day lines are looked up in the text on demand (a lookup
    needs a handful of 1,000+); writers call `all_days()`."""

    def __init__(self, root, swept=0, segments=(), retired=(), dirs=None, days=None,
                 unsettled=()):
        self.root = root
        self.swept = swept
        self.segments = list(segments)           # [(id, lines)], oldest first
        self.retired = list(retired)             # [(id, when)]
        self.dirs = dict(dirs or {})             # "." | YYYY | YYYYMM -> mtime_ns
        self.unsettled = set(unsettled)
        self._days = days                        # day -> DayRecord
        self._day_text = ""
        self._finds = 0
        self.checksum = None

    @classmethod
    def parse(cls, data):
        body, marker, tail = data.rpartition(b"\ncrc ")
        if not marker or tail.strip() != b"%08x" % binascii.crc32(body + b"\n"):
            raise CorruptIndex("state: checksum mismatch")
        try:
            text = body.decode("utf-8") + "\n"
        except UnicodeDecodeError:
            raise CorruptIndex("state: not UTF-8") from None
        split = text.find("\nday ")
        head, days_text = (text, "") if split < 0 else (text[:split + 1], text[split:])
        lines = head.split("\n")
        if lines[0] != STATE_MAGIC:
            raise CorruptIndex("state: unknown format")
        state = cls(None)
        try:
            for line in lines[1:]:
                if not line:
                    continue
                word, _, rest = line.partition(" ")
                if word == "root":
                    state.root = rest
                elif word == "swept":
                    state.swept = int(rest)
                elif word == "unsettled":
                    state.unsettled = set(rest.split())
                elif word == "seg":
                    seg_id, count = rest.split()
                    state.segments.append((seg_id, int(count)))
                elif word == "retired":
                    seg_id, when = rest.split()
                    state.retired.append((seg_id, int(when)))
                elif word == "dir":
                    rel, mtime = rest.split()
                    state.dirs[rel] = int(mtime)
                else:
                    raise ValueError(word)
        except ValueError:
            raise CorruptIndex("state: malformed line") from None
        if state.root is None:
            raise CorruptIndex("state: no root")
        state._day_text = days_text
        state.checksum = tail.strip()
        return state

    def day(self, day):
        """The DayRecord of a day folder, or None."""
        if self._days is not None:
            return self._days.get(day)
        self._finds += 1
        if self._finds > 32:            # many days wanted: parsing them all is cheaper
            return self.all_days().get(day)
        start = self._day_text.find("\nday %s " % day)
        if start < 0:
            return None
        end = self._day_text.find("\n", start + 1)
        return self._day_line(self._day_text[start + 1:end])

    def newest_day(self):
        """The newest day folder indexed (YYYYMMDD), or None."""
        if self._days is not None:
            return max(self._days) if self._days else None
        start = self._day_text.rfind("\nday ")
        return self._day_text[start + 5:start + 13] if start >= 0 else None

    @staticmethod
    def _day_line(line):
        try:
            _, _day, owner, mtime, count, digest = line.split(" ")
            return DayRecord(owner, int(mtime), int(count), digest)
        except ValueError:
            raise CorruptIndex("state: malformed day line") from None

    def all_days(self):
        if self._days is None:
            days = {}
            for line in self._day_text.split("\n"):
                if line:
                    days[line[4:12]] = self._day_line(line)
            self._days = days
        return self._days

    def serialize(self):
        out = [STATE_MAGIC, "root %s" % self.root, "swept %d" % self.swept,
               "unsettled %s" % " ".join(sorted(self.unsettled))]
        out.extend("seg %s %d" % segment for segment in self.segments)
        out.extend("retired %s %d" % item for item in self.retired)
        out.extend("dir %s %d" % (rel, mtime) for rel, mtime in sorted(self.dirs.items()))
        out.extend("day %s %s %d %d %s" % (day, record.owner, record.mtime_ns, record.count,
                                            record.digest)
                   for day, record in sorted(self.all_days().items()))
        body = ("\n".join(out) + "\n").encode("utf-8")
        self.checksum = b"%08x" % binascii.crc32(body)
        return body + b"crc " + self.checksum + b"\n"


# --- segments ---

class Segment:
    """An immutable segment file."""

    def __init__(self, directory, seg_id):
        self.id = seg_id
        self.path = os.path.join(directory, "seg-%s.idx" % seg_id)

    def _header(self, fd):
        head = os.pread(fd, HEADER.size, 0)
        if len(head) != HEADER.size:
            raise CorruptIndex("%s: short header" % self.path)
        magic, version, buckets, _lines, seg_id = HEADER.unpack(head)
        if (magic != SEGMENT_MAGIC or version != SEGMENT_VERSION or not buckets
                or buckets & (buckets - 1) or buckets > MAX_BUCKETS
                or seg_id.decode("ascii", "replace") != self.id):
            raise CorruptIndex("%s: bad header" % self.path)
        return buckets

    def _block(self, fd, bucket, buckets, size):
        slot = os.pread(fd, SLOT.size, HEADER.size + SLOT.size * bucket)
        if len(slot) != SLOT.size:
            raise CorruptIndex("%s: short slot table" % self.path)
        offset, length = SLOT.unpack(slot)
        if (not length or offset < HEADER.size + SLOT.size * buckets
                or offset + length > size):
            raise CorruptIndex("%s: bad slot %d" % (self.path, bucket))
        data = os.pread(fd, length, offset)
        try:
            text = zlib.decompress(data).decode("utf-8")
        except (zlib.error, UnicodeDecodeError):
            raise CorruptIndex("%s: damaged block %d" % (self.path, bucket)) from None
        if not text.startswith("#%s %d\n" % (self.id, bucket)):
            raise CorruptIndex("%s: misplaced block %d" % (self.path, bucket))
        return text

    def _open(self):
        try:
            return os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise _SegmentGone(self.id) from None

    def lines_for(self, key):
        """The lines whose key is `key`."""
        fd = self._open()
        try:
            buckets = self._header(fd)
            text = self._block(fd, _bucket(key, buckets), buckets, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        found = []
        marker = "\n%s\t" % key
        start = text.find(marker)
        while start >= 0:
            end = text.find("\n", start + 1)
            if end < 0:
                raise CorruptIndex("%s: unterminated line" % self.path)
            found.append(text[start + 1:end])
            start = end if text.startswith(marker, end) else -1
        return found

    def all_lines(self):
        """Every line of the segment."""
        fd = self._open()
        try:
            buckets = self._header(fd)
            size = os.fstat(fd).st_size
            lines = []
            for bucket in range(buckets):
                text = self._block(fd, bucket, buckets, size)
                lines.extend(text.split("\n")[1:-1])
        finally:
            os.close(fd)
        return lines


def _write_segment(directory, seg_id, buckets, blocks, total_lines, durable=False):
    """Write a segment from `blocks`, an iterable of (bucket, sorted lines), every
    bucket exactly once; publish it by rename. Returns its final path."""
    temporary = os.path.join(directory, "tmp-seg-%s-%d" % (seg_id, os.getpid()))
    final = os.path.join(directory, "seg-%s.idx" % seg_id)
    slots = [None] * buckets
    with atomic_file(final, temporary=temporary, mode=0o644, durable=durable) as handle:
        handle.write(HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, buckets, total_lines,
                                 seg_id.encode("ascii")))
        handle.write(b"\0" * (SLOT.size * buckets))
        offset = HEADER.size + SLOT.size * buckets
        for bucket, lines in blocks:
            text = "#%s %d\n" % (seg_id, bucket)
            if lines:
                text += "\n".join(lines) + "\n"
            block = zlib.compress(text.encode("utf-8"), 6)
            handle.write(block)
            slots[bucket] = (offset, len(block))
            offset += len(block)
        if any(slot is None for slot in slots):
            raise ValueError("segment %s: a bucket was not written" % seg_id)
        handle.seek(HEADER.size)
        handle.write(b"".join(SLOT.pack(*slot) for slot in slots))
    return final


def _write_small_segment(directory, seg_id, lines):
    buckets = _bucket_count(len(lines))
    grouped = [[] for _ in range(buckets)]
    for line in lines:
        grouped[_bucket(line[:line.index("\t")], buckets)].append(line)
    for group in grouped:
        group.sort()
    return _write_segment(directory, seg_id, buckets, enumerate(grouped), len(lines))


class _Spill:
    """Lines of a rebuild, spilled to REBUILD_BUCKETS partition files by bucket hash, so
    that building the index of millions of recordings needs little memory."""

    def __init__(self, directory):
        self.directory = directory
        os.mkdir(directory)
        self.pending = [[] for _ in range(REBUILD_BUCKETS)]
        self.count = 0

    def add(self, lines):
        for line in lines:
            partition = _bucket(line[:line.index("\t")], REBUILD_BUCKETS)
            queue = self.pending[partition]
            queue.append(line)
            if len(queue) >= 4096:
                self._flush(partition)
        self.count += len(lines)

    def _flush(self, partition):
        queue = self.pending[partition]
        if queue:
            with open(os.path.join(self.directory, "%03d" % partition), "a",
                      encoding="utf-8") as handle:
                handle.write("\n".join(queue) + "\n")
            queue.clear()

    def blocks(self, buckets):
        """(bucket, sorted lines) for every bucket; `buckets` is a multiple of the
        partition count, so each partition holds whole buckets."""
        for partition in range(REBUILD_BUCKETS):
            self._flush(partition)
            path = os.path.join(self.directory, "%03d" % partition)
            try:
                with open(path, encoding="utf-8") as handle:
                    lines = handle.read().split("\n")[:-1]
                os.unlink(path)
            except FileNotFoundError:
                lines = []
            grouped = {}
            for line in lines:
                grouped.setdefault(_bucket(line[:line.index("\t")], buckets), []).append(line)
            for bucket in range(partition, buckets, REBUILD_BUCKETS):
                group = grouped.get(bucket, [])
                group.sort()
                yield bucket, group


# --- the plan of a refresh ---

class _Plan:
    """What a refresh found changed: folder mtimes, day folders gone, day folders whose
    names changed (with their listing), and day folders whose mtime or settledness
    changed but whose names did not."""

    def __init__(self, sweep):
        self.sweep = sweep
        self.dirs = {}
        self.dirs_gone = set()
        self.days_gone = set()
        self.scanned = {}       # day -> (mtime_ns, names, settled, digest)
        self.touched = {}       # day -> (mtime_ns, settled)

    @property
    def empty(self):
        return not (self.sweep or self.dirs or self.dirs_gone or self.days_gone
                    or self.scanned or self.touched)

    def overlay(self):
        """day -> index lines, for the days this plan would change (in memory)."""
        overlay = {day: [] for day in self.days_gone}
        for day, (_mtime, names, _settled, _digest) in self.scanned.items():
            overlay[day] = day_lines(day, names)
        return overlay


class _PendingSegment:
    """A segment of the next state: `id`, `count` of lines, and `lines` when it is still
    to be written (None: it is on disk already)."""

    __slots__ = ("id", "count", "lines")

    def __init__(self, seg_id, count, lines=None):
        self.id = seg_id
        self.count = count
        self.lines = lines


def _owner_of(days, day):
    record = days.get(day)
    return record.owner if record is not None else None


# --- the index ---

class RecordingIndex:
    """The index of the archive under `root`, kept in `directory`."""

    def __init__(self, root, directory, clock=time.time):
        self.root = root.rstrip("/") or "/"
        self.directory = directory
        self.clock = clock

    # - reading -

    def _load(self):
        """The state, or None when there is none or it cannot be trusted."""
        try:
            with open(os.path.join(self.directory, STATE_NAME), "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            state = State.parse(data)
        except CorruptIndex:
            return None
        return state if state.root == self.root else None

    def state(self):
        """The current State (what is indexed), or None when there is none or it cannot
        be trusted (then the next lookup rebuilds it)."""
        return self._load()

    def find(self, phone, first_day=None, last_day=None):
        """Sorted (day, name) of the recordings whose dst or src matches `phone`
        (digits), day folders in [first_day, last_day] (YYYYMMDD, None: open). The files
        are not checked: the caller stats what it returns and `forget`s what is gone."""
        previous = ()                    # no state has this checksum
        for _attempt in range(10):
            state = self._load()
            if state is None:
                return self._recover(phone, first_day, last_day)
            try:
                state, overlay = self._refresh(state)
                return self._search(state, overlay, phone, first_day, last_day)
            except _SegmentGone:
                # A writer retired it meanwhile (read the new state), unless the state
                # did not change: then it names a file that is not there.
                if state.checksum == previous:
                    return self._recover(phone, first_day, last_day)
                previous = state.checksum
            except CorruptIndex:
                return self._recover(phone, first_day, last_day)
        return self._recover(phone, first_day, last_day)

    def _search(self, state, overlay, phone, first_day, last_day):
        key = index_key(phone)
        found = set()

        def consider(line, owner_ok):
            _key, digits, day, name = line.split("\t", 3)
            if ((first_day and day < first_day) or (last_day and day > last_day)
                    or not owner_ok(day)):
                return
            if numbers_match(phone, digits):
                found.add((day, name))

        owners = {}

        def owner(day):
            if day not in owners:
                record = state.day(day)
                owners[day] = record.owner if record else None
            return owners[day]

        for seg_id, _count in state.segments:
            segment = Segment(self.directory, seg_id)
            for line in segment.lines_for(key):
                consider(line, lambda day: day not in overlay and owner(day) == seg_id)
        prefix = key + "\t"
        for day, lines in overlay.items():
            for line in lines:
                if line.startswith(prefix):
                    consider(line, lambda _day: True)
        return sorted(found)

    # - refreshing -

    def _refresh(self, state, force_days=(), sweep=None):
        """Bring the state up to date with the archive. Returns (state, overlay): the
        overlay holds, in memory, changes that could not be saved (lock busy)."""
        now = self.clock()
        if sweep is None:
            sweep = now - state.swept >= SWEEP_SECONDS
        plan = self._plan(state, now, sweep, force_days)
        if plan.empty:
            return state, {}
        lock = self._lock(LOCK_WAIT)
        if lock is None:
            return state, plan.overlay()
        try:
            fresh = self._load()
            if fresh is None:
                raise CorruptIndex("state changed under the lock")
            if fresh.checksum != state.checksum:
                plan = self._plan(fresh, now, sweep, force_days)
                if plan.empty:
                    return fresh, {}
            try:
                return self._apply(fresh, plan, now), {}
            except OSError:
                # Cannot save (disk full, permissions): answer from memory all the same.
                return fresh, plan.overlay()
        finally:
            self._unlock(lock)

    def _plan(self, state, now, sweep, force_days=()):
        plan = _Plan(sweep)
        now_ns = int(now * 1e9)
        recent = set(_recent_days(now))
        newest = state.newest_day()
        if newest:
            recent.add(newest)          # where recordings land, whatever the clocks say
        known = state.dirs
        years = {day[:4] for day in recent}
        months = {day[:6] for day in recent}
        days = recent | state.unsettled | set(force_days)
        if sweep:
            years |= {rel for rel in known if len(rel) == 4}
            months |= {rel for rel in known if len(rel) == 6}
            days |= set(state.all_days())

        def gone(prefix):
            plan.dirs_gone.update(rel for rel in known if rel.startswith(prefix))
            plan.days_gone.update(day for day in state.all_days() if day.startswith(prefix))

        info = _stat_dir(self.root, follow=True)
        if info is None:
            if known or state.all_days():
                gone("")
            return plan
        if known.get(".") != info.st_mtime_ns:
            plan.dirs["."] = info.st_mtime_ns
            listed = _subdirs(self.root, _is_year)
            years |= listed
            for year in {rel for rel in known if len(rel) == 4} - listed:
                gone(year)
        for year in sorted(years):
            if year in plan.dirs_gone:
                continue
            info = _stat_dir(os.path.join(self.root, year))
            if info is None:
                if year in known:
                    gone(year)
                continue
            if known.get(year) != info.st_mtime_ns:
                plan.dirs[year] = info.st_mtime_ns
                listed = {year + name for name in
                          _subdirs(os.path.join(self.root, year), _is_month)}
                months |= listed
                for month in {rel for rel in known
                              if len(rel) == 6 and rel.startswith(year)} - listed:
                    gone(month)
        for month in sorted(months):
            if month in plan.dirs_gone:
                continue
            path = os.path.join(self.root, month[:4], month[4:])
            info = _stat_dir(path)
            if info is None:
                if month in known:
                    gone(month)
                continue
            if known.get(month) != info.st_mtime_ns:
                plan.dirs[month] = info.st_mtime_ns
                listed = {month + name for name in
                          _day_folder_names(path, int(month[:4]), int(month[4:]))}
                days |= {day for day in listed if state.day(day) is None}
                for day in state.all_days():
                    if day.startswith(month) and day not in listed:
                        plan.days_gone.add(day)
        for day in sorted(days):
            if day in plan.days_gone or not (len(day) == 8 and day.isdigit()):
                continue
            record = state.day(day)
            path = _day_path(self.root, day)
            info = _stat_dir(path)
            if info is None:
                if record is not None:
                    plan.days_gone.add(day)
                continue
            was_settled = day not in state.unsettled
            if (record is not None and record.mtime_ns == info.st_mtime_ns and was_settled
                    and day not in force_days):
                continue
            names = _day_names(path)
            if names is None:
                if record is not None:
                    plan.days_gone.add(day)
                continue
            settled = info.st_mtime_ns <= now_ns - SETTLE_NS
            digest = _names_digest(names)
            if record is not None and record.digest == digest and record.count == len(names):
                if record.mtime_ns != info.st_mtime_ns or settled != was_settled:
                    plan.touched[day] = (info.st_mtime_ns, settled)
                continue
            plan.scanned[day] = (info.st_mtime_ns, names, settled, digest)
        return plan

    def _apply(self, state, plan, now):
        """Save a plan (the lock is held): a new segment for the scanned days, merges,
        the new state. Returns the new state."""
        days = {day: record.copy() for day, record in state.all_days().items()}
        unsettled = set(state.unsettled)
        dirs = {rel: mtime for rel, mtime in state.dirs.items() if rel not in plan.dirs_gone}
        dirs.update(plan.dirs)
        for day in plan.days_gone:
            days.pop(day, None)
            unsettled.discard(day)
        for day, (mtime, settled) in plan.touched.items():
            if day in days:
                days[day].mtime_ns = mtime
                (unsettled.discard if settled else unsettled.add)(day)
        segments = [_PendingSegment(seg_id, count) for seg_id, count in state.segments]
        if plan.scanned:
            new_id = _new_id()
            new_lines = []
            for day, (mtime, names, settled, digest) in plan.scanned.items():
                lines = day_lines(day, names)
                days[day] = DayRecord(new_id if lines else "-", mtime, len(names), digest)
                (unsettled.discard if settled else unsettled.add)(day)
                new_lines.extend(lines)
            if new_lines:
                segments.append(_PendingSegment(new_id, len(new_lines), new_lines))
        segments = self._merge(segments, days)
        for segment in segments:
            if segment.lines is not None:
                _write_small_segment(self.directory, segment.id, segment.lines)
                self._adopt(os.path.join(self.directory, "seg-%s.idx" % segment.id))
        kept = {segment.id for segment in segments}
        retired = list(state.retired) + [(seg_id, int(now)) for seg_id, _ in state.segments
                                          if seg_id not in kept]
        new_state = State(self.root, int(now) if plan.sweep else state.swept,
                          [(segment.id, segment.count) for segment in segments],
                          self._expire(retired, now), dirs, days, unsettled)
        self._write_state(new_state)
        return new_state

    def _merge(self, segments, days):
        """Drop segments that own no day; merge neighbours of close size (not the newest,
        which holds the days that change now), so segments stay few: O(log n)."""
        live = {}
        for record in days.values():
            live[record.owner] = live.get(record.owner, 0) + record.count
        segments = [segment for segment in segments if live.get(segment.id)]
        while len(segments) >= 3:
            older, newer = segments[-3], segments[-2]
            size_older, size_newer = live[older.id], live[newer.id]
            if not ((size_older <= SMALL_SEGMENT or size_older <= 2 * size_newer)
                    and size_older + size_newer <= MAX_AUTO_MERGE):
                break
            merged_id = _new_id()
            lines = []
            for segment in (older, newer):
                source = segment.lines if segment.lines is not None else \
                    Segment(self.directory, segment.id).all_lines()
                lines.extend(line for line in source
                             if _owner_of(days, line.split("\t", 3)[2]) == segment.id)
            for record in days.values():
                if record.owner in (older.id, newer.id):
                    record.owner = merged_id
            live[merged_id] = size_older + size_newer
            segments[-3:-1] = [_PendingSegment(merged_id, len(lines), lines)]
        return segments

    def _expire(self, retired, now):
        """Delete retired segments past their grace time; return the ones kept."""
        kept = []
        for seg_id, when in retired:
            if now - when >= GRACE_SECONDS:
                try:
                    os.unlink(os.path.join(self.directory, "seg-%s.idx" % seg_id))
                except FileNotFoundError:
                    pass
            else:
                kept.append((seg_id, when))
        return kept

    def _write_state(self, state, durable=False):
        temporary = os.path.join(self.directory, "tmp-state-%d-%s" % (os.getpid(), _new_id()))
        atomic_write(os.path.join(self.directory, STATE_NAME), state.serialize(),
                     temporary=temporary, mode=0o644, owner=self._owner(), durable=durable)

    def forget(self, days):
        """Day folders where a hit had gone: scan them again now (best effort)."""
        state = self._load()
        if state is None:
            return
        try:
            self._refresh(state, force_days=set(days), sweep=False)
        except (CorruptIndex, _SegmentGone, OSError):
            pass

    def refresh(self, sweep=False):
        """Bring the index up to date (rebuilding it when unusable). Returns the state."""
        state = self._load()
        if state is None:
            return self.rebuild()
        return self._refresh(state, sweep=sweep)[0]

    # - rebuilding -

    def rebuild(self, progress=None):
        """Index the whole archive again, in a new segment, and swap it in; waits for
        other writers. `progress(done_days, total_days, recordings)` is called per day
        folder. Returns the new state."""
        self._prepare()
        lock = self._lock(None)
        try:
            return self._rebuild_locked(progress)
        finally:
            self._unlock(lock)

    def _rebuild_locked(self, progress=None):
        started = self.clock()
        seg_id = _new_id()
        old = self._load_any()
        dirs, day_paths = {}, []
        info = _stat_dir(self.root, follow=True)
        if info is not None:
            dirs["."] = info.st_mtime_ns
            day_paths = list(_walk_days(self.root, folders=dirs))
        spill_dir = os.path.join(self.directory, "tmp-rebuild-%s" % seg_id)
        spill = _Spill(spill_dir)
        days, unsettled, recordings = {}, set(), 0
        try:
            for done, day in enumerate(day_paths, 1):
                path = _day_path(self.root, day)
                info = _stat_dir(path)
                names = _day_names(path) if info is not None else None
                if names is not None:
                    before = spill.count
                    spill.add(day_lines(day, names))
                    days[day] = DayRecord(seg_id if spill.count > before else "-",
                                          info.st_mtime_ns, len(names), _names_digest(names))
                    if info.st_mtime_ns > int(started * 1e9) - SETTLE_NS:
                        unsettled.add(day)
                    recordings += len(names)
                if progress is not None:
                    progress(done, len(day_paths), recordings)
            buckets = _bucket_count(spill.count, REBUILD_BUCKETS)
            _write_segment(self.directory, seg_id, buckets, spill.blocks(buckets),
                           spill.count, durable=True)
        finally:
            _remove_tree(spill_dir)
        self._adopt(os.path.join(self.directory, "seg-%s.idx" % seg_id))
        now = self.clock()
        referenced = {seg_id}
        retired = []
        if old is not None:
            retired = [(sid, when) for sid, when in old.retired]
            retired += [(sid, int(now)) for sid, _ in old.segments]
        known = {sid for sid, _ in retired} | referenced
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.startswith("seg-") and name.endswith(".idx"):
                if name[4:-4] not in known:
                    retired.append((name[4:-4], int(now)))   # a reader may still use it
            elif name.startswith("tmp-") and path != spill_dir:
                try:
                    if now - os.lstat(path).st_mtime > TEMP_MAX_AGE:
                        _remove_tree(path)
                except FileNotFoundError:
                    pass
        state = State(self.root, int(now), [(seg_id, spill.count)], self._expire(retired, now),
                      dirs, days, unsettled)
        self._write_state(state, durable=True)
        # What changed while the archive was being read: a sweep under the same lock.
        plan = self._plan(state, now, True)
        return self._apply(state, plan, now)

    def _load_any(self):
        """The state even if it is of another root (to retire its segments), or None."""
        try:
            with open(os.path.join(self.directory, STATE_NAME), "rb") as handle:
                return State.parse(handle.read())
        except (OSError, CorruptIndex):
            return None

    def _recover(self, phone, first_day, last_day):
        """The index is missing or damaged: rebuild it and answer from it, unless another
        process is already rebuilding; then answer by scanning the folders."""
        try:
            self._prepare()
            lock = self._lock(0)
        except OSError:
            lock = None
        if lock is not None:
            try:
                state = self._rebuild_locked()
                return self._search(state, {}, phone, first_day, last_day)
            except (OSError, CorruptIndex, _SegmentGone):
                pass
            finally:
                self._unlock(lock)
        return self.scan(phone, first_day, last_day)

    def scan(self, phone, first_day=None, last_day=None):
        """The same answer as `find`, by reading the day folders in range (slow: no index)."""
        found = []
        key = index_key(phone)
        # A matching number's digits end with the key, and they stand together in the
        # name once punctuation is dropped: names without the key need no parsing.
        strip = str.maketrans("", "", " \t-.()/+")
        for day in _walk_days(self.root, first_day or "00000000", last_day or "99999999"):
            names = [name for name in _day_names(_day_path(self.root, day)) or ()
                     if key in name.translate(strip)]
            for line in day_lines(day, names):
                _key, digits, _day, name = line.split("\t", 3)
                if numbers_match(phone, digits):
                    found.append((day, name))
        return sorted(set(found))

    # - files, ownership, locking -

    def _prepare(self):
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, exist_ok=True)
            self._adopt(self.directory)

    def _owner(self):
        # The state dir's owner (statedir.owner_for): run as root (the admin tool), what
        # we create goes to it, so the web server can keep the index up to date.
        return owner_for(os.path.dirname(self.directory.rstrip("/")) or "/")

    def _adopt(self, path):
        try:
            give(path, self._owner())
        except OSError:
            pass

    def _lock(self, timeout):
        """The writers' lock: an fd, or None when not had within `timeout` seconds
        (None: wait as long as it takes)."""
        import fcntl
        path = os.path.join(self.directory, LOCK_NAME)
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
                self._adopt(path)
            except PermissionError:
                fd = os.open(path, os.O_RDONLY)   # flock works on a read-only fd too
        except OSError:
            return None
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.005)

    @staticmethod
    def _unlock(fd):
        os.close(fd)        # closing the only descriptor releases the flock

    def stats(self):
        """(recordings, day folders, segments, bytes on disk) of the current index."""
        state = self._load()
        total = 0
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
            try:
                total += os.lstat(os.path.join(self.directory, name)).st_size
            except FileNotFoundError:
                pass
        if state is None:
            return 0, 0, 0, total
        days = state.all_days()
        return (sum(record.count for record in days.values()), len(days), len(state.segments),
                total)


def _remove_tree(path):
    if os.path.isdir(path) and not os.path.islink(path):
        for name in os.listdir(path):
            _remove_tree(os.path.join(path, name))
        os.rmdir(path)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
