"""The recordings index (callexchange.recordings.index) against a real archive in a temp
dir: lookups equal a direct scan, stay right as files come and go, survive damage,
concurrency and a busy lock, and never walk the archive when nothing changed."""

import contextlib
import fcntl
import os
import threading
import time

import pytest

from callexchange.recordings import index as recording_index
from callexchange.recordings.index import LOCK_NAME, DayRecord, RecordingIndex, State

LEAD = "12127773456"


def today(offset_days=0):
    now = time.localtime()
    day = time.localtime(time.mktime((now.tm_year, now.tm_mon, now.tm_mday + offset_days,
                                      12, 0, 0, 0, 0, -1)))
    return "%04d%02d%02d" % day[:3]


class Archive:
    def __init__(self, tmp_path):
        self.root = str(tmp_path / "monitor")
        self.directory = str(tmp_path / "state" / "recordings-index")
        os.makedirs(self.root)

    def path(self, day, name=""):
        return os.path.join(self.root, day[:4], day[4:6], day[6:], name)

    def add(self, day, name, data=b""):
        os.makedirs(self.path(day), exist_ok=True)
        with open(self.path(day, name), "wb") as handle:
            handle.write(data)
        return name

    def recording(self, day, dst=LEAD, src="2001", clock="101010", uniqueid="1720039056.1",
                  prefix="out", extension="wav"):
        return self.add(day, "%s-%s-%s-%s-%s-%s.%s" % (prefix, dst, src, day, clock,
                                                       uniqueid, extension))

    def index(self, **kwargs):
        return RecordingIndex(self.root, self.directory, **kwargs)


@pytest.fixture
def archive(tmp_path):
    return Archive(tmp_path)


@contextlib.contextmanager
def writer_lock(index):
    """Hold the index's writer lock (its `lock` file's flock) as another process would."""
    os.makedirs(index.directory, exist_ok=True)
    fd = os.open(os.path.join(index.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def names(found):
    return [name for _day, name in found]


# --- lookups ------------------------------------------------------------------------------

def test_lookup_finds_dst_and_src_and_equals_a_direct_scan(archive):
    a = archive.recording("20240703", dst=LEAD, src="unknown", uniqueid="1.1")
    b = archive.recording("20240708", dst="2001", src="+1-212-777-3456", uniqueid="1.2",
                          prefix="in")
    c = archive.recording("20240712", dst="2127773456", src="2001", uniqueid="1.3")
    archive.recording("20240712", dst="912127773456999", uniqueid="1.4")     # substring only
    archive.recording("20240712", dst="12127773457", uniqueid="1.5")
    archive.add("20240712", "notes-12127773456.txt")
    index = archive.index()
    found = index.find(LEAD)
    assert found == [("20240703", a), ("20240708", b), ("20240712", c)]
    assert found == index.scan(LEAD)
    assert index.find("2127773456") == found


def test_short_numbers_match_exactly_only(archive):
    exact = archive.recording("20240703", dst="600", src="2001", prefix="q")
    archive.recording("20240703", dst="1600", src="12001", uniqueid="1.9")
    index = archive.index()
    assert names(index.find("2001")) == [exact]
    assert names(index.find("600")) == [exact]
    assert index.find("001") == []


def test_from_and_to_select_day_folders(archive):
    for day in ("20231231", "20240101", "20240615", "20241231", "20250101"):
        archive.recording(day, uniqueid=day + ".1")
    index = archive.index()
    assert [d for d, _ in index.find(LEAD, "20240101", "20241231")] == \
        ["20240101", "20240615", "20241231"]
    assert [d for d, _ in index.find(LEAD, "20241231")] == ["20241231", "20250101"]
    assert [d for d, _ in index.find(LEAD, None, "20231231")] == ["20231231"]
    assert index.scan(LEAD, "20240101", "20241231") == index.find(LEAD, "20240101", "20241231")


def test_missing_root_gives_nothing(tmp_path):
    index = RecordingIndex(str(tmp_path / "nowhere"), str(tmp_path / "idx"))
    assert index.find(LEAD) == []


def test_odd_folders_and_names_are_ignored(archive):
    good = archive.recording("20240703")
    os.makedirs(os.path.join(archive.root, "2024", "13", "01"))
    os.makedirs(os.path.join(archive.root, "2024", "02", "30"))
    os.makedirs(os.path.join(archive.root, "lost+found"))
    archive.add("20240703", "out-%s-2001-20240703-101010-1.2.wav\nx" % LEAD)
    os.symlink(archive.path("20240703"), os.path.join(archive.root, "2024", "07", "04"))
    assert names(archive.index().find(LEAD)) == [good]


DASHED = {
    "dst": "out-212-777-3456-2001-20240706-121212-1720300000.4.wav",
    "dst_plus": "out-+1-212-777-3456-2003-20240706-121213-1720300001.5.wav",
    "src": "out-2127773456-20-01-20240706-121214-1720300002.6.wav",
    "prefix": "from-internal-2004-12127773456-20240706-121215-1720300003.7.wav",
    "substring": "out-912127773456999-2005-20240706-121216-1720300004.8.wav",
    "dashed_substring": "out-9121-2777-3456999-2006-20240706-121217-1720300005.9.wav",
}


@pytest.mark.parametrize("phone, keys", [
    ("12127773456", ["dst", "dst_plus", "src", "prefix"]),
    ("2127773456", ["dst", "dst_plus", "src", "prefix"]),
    ("2001", ["dst", "src"]),
    ("2003", ["dst_plus"]),
    ("2004", ["prefix"]),
    ("912127773456999", ["substring", "dashed_substring"]),   # equal, not inside
])
def test_dashed_numbers_are_found_through_the_index(archive, monkeypatch, phone, keys):
    for name in DASHED.values():
        archive.add("20240706", name)
    archive.index().rebuild()
    settled = time.time() + 5
    index = archive.index(clock=lambda: settled)
    index.find(phone)                       # settles the folder just indexed
    expected = sorted(("20240706", DASHED[key]) for key in keys)
    assert index.scan(phone) == expected
    # From the index alone: one bucket of the one segment, no scan, no folder listing.
    reads = []
    real_lines_for = recording_index.Segment.lines_for
    monkeypatch.setattr(recording_index.Segment, "lines_for",
                        lambda self, key: reads.append(key) or real_lines_for(self, key))
    monkeypatch.setattr(index, "scan", lambda *a: pytest.fail("scanned the archive"))
    monkeypatch.setattr(index, "_recover", lambda *a: pytest.fail("rebuilt the index"))
    monkeypatch.setattr(recording_index, "_day_names",
                        lambda path: pytest.fail("listed %s" % path))
    assert index.find(phone) == expected
    assert reads == [phone[-7:]] * len(index.state().segments) and reads


def test_an_index_of_the_old_format_is_rebuilt(archive):
    name = archive.add("20240706", DASHED["dst"])
    index = archive.index()
    index.rebuild()
    state_path = os.path.join(archive.directory, "state")
    with open(state_path, "rb") as handle:
        body = handle.read().replace(b"cx-recordings-index 2\n", b"cx-recordings-index 1\n")
    with open(state_path, "wb") as handle:
        handle.write(body)
    assert index.state() is None
    assert names(index.find("2127773456")) == [name]
    assert index.state() is not None


def test_folders_and_symlinks_named_like_recordings_are_no_recordings(archive):
    good = archive.recording("20240703", uniqueid="1.1")
    os.makedirs(archive.path("20240703", "out-%s-2001-20240703-101011-1.2.wav" % LEAD))
    os.symlink("/etc/passwd",
               archive.path("20240703", "out-%s-2001-20240703-101012-1.3.wav" % LEAD))
    os.symlink(archive.path("20240703", good),           # to a real recording, inside
               archive.path("20240703", "out-%s-2001-20240703-101013-1.4.wav" % LEAD))
    os.symlink("missing.wav",
               archive.path("20240703", "out-%s-2001-20240703-101014-1.5.wav" % LEAD))
    index = archive.index()
    assert names(index.find(LEAD)) == [good]
    assert names(index.scan(LEAD)) == [good]
    assert index.state().day("20240703").count == 1
    # Also in a day folder that changes later (a refresh, not a rebuild).
    day = today()
    fresh = archive.recording(day, uniqueid="1.6")
    os.symlink(archive.path(day, fresh),
               archive.path(day, "out-%s-2001-%s-101015-1.7.wav" % (LEAD, day)))
    os.makedirs(archive.path(day, "out-%s-2001-%s-101016-1.8.wav" % (LEAD, day)))
    assert names(index.find(LEAD)) == [good, fresh]


# --- staying up to date -------------------------------------------------------------------

def test_a_new_recording_is_found_by_the_next_lookup(archive):
    archive.recording(today(-3))
    index = archive.index()
    assert len(index.find(LEAD)) == 1
    new = archive.recording(today(), uniqueid="2.1")
    assert names(index.find(LEAD))[-1] == new
    # And once more after the folder has settled (mtime no longer recent).
    later = archive.recording(today(), uniqueid="2.2", clock="235959")
    settled = time.time() + 5
    index = archive.index(clock=lambda: settled)
    assert names(index.find(LEAD))[-1] == later


def test_new_day_month_and_year_folders_are_found(archive):
    archive.recording("20200101")
    index = archive.index()
    index.find(LEAD)
    new = archive.recording(today(-1), uniqueid="3.1")
    newest = archive.recording(today(), uniqueid="3.2")
    assert names(index.find(LEAD))[-2:] == [new, newest]


def test_files_added_to_an_old_folder_are_found_by_the_sweep(archive):
    archive.recording("20200101")
    index = archive.index()
    index.find(LEAD)
    old = archive.recording("20200101", uniqueid="4.1", clock="111111")
    later = time.time() + recording_index.SWEEP_SECONDS + 1
    assert names(archive.index(clock=lambda: later).find(LEAD))[-1] == old


def test_a_deleted_recording_is_dropped_after_forget(archive):
    keep = archive.recording("20240703", uniqueid="5.1")
    gone = archive.recording("20240703", uniqueid="5.2", clock="121212")
    index = archive.index()
    assert names(index.find(LEAD)) == [keep, gone]
    os.unlink(archive.path("20240703", gone))
    index.forget({"20240703"})
    assert names(index.find(LEAD)) == [keep]
    state = index.state()
    assert state.day("20240703").count == 1


def test_a_removed_day_folder_leaves_the_index(archive):
    archive.recording("20240703")
    keep = archive.recording("20240704", uniqueid="6.1")
    index = archive.index()
    index.find(LEAD)
    os.unlink(archive.path("20240703", os.listdir(archive.path("20240703"))[0]))
    os.rmdir(archive.path("20240703"))
    later = time.time() + recording_index.SWEEP_SECONDS + 1
    assert names(archive.index(clock=lambda: later).find(LEAD)) == [keep]
    assert archive.index().state().day("20240703") is None


def test_nothing_changed_means_no_listing_and_no_write(archive, monkeypatch):
    archive.recording("20240703")
    index = archive.index()
    index.find(LEAD)
    settled = time.time() + 5
    index = archive.index(clock=lambda: settled)
    index.find(LEAD)                        # settles what was recent
    state_mtime = os.stat(os.path.join(archive.directory, "state")).st_mtime_ns

    def no_listing(*args):
        raise AssertionError("the archive was listed")
    monkeypatch.setattr(recording_index.os, "listdir", no_listing)
    monkeypatch.setattr(recording_index.os, "scandir", no_listing)
    assert len(index.find(LEAD)) == 1
    assert os.stat(os.path.join(archive.directory, "state")).st_mtime_ns == state_mtime


def test_many_refreshes_keep_few_segments(archive):
    """A year of days each refreshed several times: merges keep the segments O(log n)."""
    start = time.mktime((2024, 1, 1, 12, 0, 0, 0, 0, -1))
    archive.recording("20231231")
    clock = [start]
    index = archive.index(clock=lambda: clock[0])
    index.find(LEAD)
    for number in range(120):
        clock[0] = start + number * 86400
        day = time.strftime("%Y%m%d", time.localtime(clock[0]))
        for call in range(3):
            archive.recording(day, uniqueid="%d.%d" % (number, call),
                              clock="1%d0000" % call)
            clock[0] += 3
            index.find(LEAD)
    state = index.state()
    assert len(index.find(LEAD)) == 1 + 120 * 3
    assert len(state.segments) <= 8, state.segments
    assert index.find(LEAD) == index.scan(LEAD)
    # Retired segments are deleted after their grace time.
    files = [n for n in os.listdir(archive.directory) if n.startswith("seg-")]
    assert len(files) <= len(state.segments) + len(state.retired)


# --- damage and rebuilds ------------------------------------------------------------------

def test_missing_index_is_built_by_the_first_lookup(archive):
    name = archive.recording("20240703")
    assert names(archive.index().find(LEAD)) == [name]
    assert os.path.exists(os.path.join(archive.directory, "state"))


@pytest.mark.parametrize("damage", ["state-garbage", "state-truncated", "segment-garbage",
                                    "segment-header", "segment-missing", "state-other-root"])
def test_a_damaged_index_still_answers_right_and_is_rebuilt(archive, damage, monkeypatch):
    expected = [archive.recording("20240703", uniqueid="7.%d" % n, clock="10%04d" % n)
                for n in range(50)]
    for n in range(200):
        archive.recording("20240704", dst="1415555%04d" % n, uniqueid="8.%d" % n)
    index = archive.index()
    index.find(LEAD)
    state_path = os.path.join(archive.directory, "state")
    [segment] = [os.path.join(archive.directory, n) for n in os.listdir(archive.directory)
                 if n.startswith("seg-")]
    if damage == "state-garbage":
        with open(state_path, "r+b") as handle:
            handle.seek(40)
            handle.write(b"\x00garbage\xff" * 10)
    elif damage == "state-truncated":
        with open(state_path, "r+b") as handle:
            handle.truncate(os.path.getsize(state_path) // 2)
    elif damage == "segment-garbage":
        size = os.path.getsize(segment)
        blocks = recording_index.HEADER.size + recording_index.SLOT.size * 256
        with open(segment, "r+b") as handle:
            for offset in range(blocks, size, 97):      # every block is hit
                handle.seek(offset)
                handle.write(b"\xde\xad")
    elif damage == "segment-header":
        with open(segment, "r+b") as handle:
            handle.write(b"JUNK")
    elif damage == "segment-missing":
        os.unlink(segment)
    elif damage == "state-other-root":
        text = open(state_path, "rb").read().replace(archive.root.encode(), b"/elsewhere")
        open(state_path, "wb").write(text)
    assert names(index.find(LEAD)) == expected
    state = index.state()
    damaged_id = os.path.basename(segment)[4:-4]
    # Rebuilt: one new segment holds everything (a rebuild writes one).
    assert state is not None and damaged_id not in [seg for seg, _ in state.segments]
    assert len(state.segments) == 1
    assert names(index.find(LEAD)) == expected
    assert len(index.find("14155550123")) == 1


def test_while_another_process_rebuilds_a_lookup_scans_directly(archive):
    expected = archive.recording("20240703")
    index = archive.index()
    with writer_lock(index):            # a rebuild in progress elsewhere
        assert names(index.find(LEAD)) == [expected]
        assert index.state() is None


def test_with_the_lock_busy_new_recordings_are_still_found(archive, monkeypatch):
    archive.recording(today(-2))
    index = archive.index()
    index.find(LEAD)
    monkeypatch.setattr(recording_index, "LOCK_WAIT", 0.05)
    with writer_lock(index):            # another process refreshing, for longer than LOCK_WAIT
        new = archive.recording(today(), uniqueid="9.1")
        assert names(index.find(LEAD))[-1] == new
    assert names(index.find(LEAD))[-1] == new


def test_an_unwritable_index_still_answers(archive, monkeypatch):
    archive.recording(today(-2))
    index = archive.index()
    index.find(LEAD)
    new = archive.recording(today(), uniqueid="9.2")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(recording_index, "_write_small_segment", refuse)
    assert names(index.find(LEAD))[-1] == new


def test_rebuild_reports_progress_and_retires_old_segments(archive):
    for day in ("20240703", "20240704", "20240705"):
        archive.recording(day)
    index = archive.index()
    index.find(LEAD)
    calls = []
    state = index.rebuild(progress=lambda *a: calls.append(a))
    assert calls[-1] == (3, 3, 3) and [c[0] for c in calls] == [1, 2, 3]
    assert len(state.segments) == 1 and len(state.retired) == 1
    assert index.stats()[:3] == (3, 3, 1)
    assert not [n for n in os.listdir(archive.directory) if n.startswith("tmp-")]


def test_state_round_trip():
    state = State("/r", 5, [("ab", 3)], [("cd", 7)], {".": 1, "2024": 2, "202407": 3},
                  {"20240703": DayRecord("ab", 9, 3, "0000ffff")}, {"20240703"})
    again = State.parse(state.serialize())
    assert (again.root, again.swept, again.segments, again.retired, again.dirs,
            again.unsettled) == ("/r", 5, [("ab", 3)], [("cd", 7)],
                                 {".": 1, "2024": 2, "202407": 3}, {"20240703"})
    assert again.day("20240703") == DayRecord("ab", 9, 3, "0000ffff")
    assert again.day("20240704") is None
    with pytest.raises(recording_index.CorruptIndex):
        State.parse(state.serialize().replace(b"/r", b"/x"))


# --- concurrency --------------------------------------------------------------------------

def test_lookups_during_reindex_and_new_files_are_always_right(archive):
    base = [archive.recording("2024%02d%02d" % (1 + n % 12, 1 + n % 28), uniqueid="10.%d" % n)
            for n in range(60)]
    for n in range(300):
        archive.recording("20240303", dst="1415555%04d" % n, uniqueid="11.%d" % n)
    archive.index().find(LEAD)
    errors, stop = [], threading.Event()
    added = []

    def lookups():
        try:
            while not stop.is_set():
                # Everything added before this lookup started must be there.
                snapshot = list(added)
                found = set(names(archive.index().find(LEAD)))
                missing = (set(base) | set(snapshot)) - found
                if missing:
                    errors.append(missing)
        except Exception as error:     # noqa: BLE001 - reported below
            errors.append(error)

    def reindex():
        try:
            for _ in range(4):
                archive.index().rebuild()
        except Exception as error:     # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=lookups) for _ in range(4)]
    threads.append(threading.Thread(target=reindex))
    for thread in threads:
        thread.start()
    for n in range(20):
        added.append(archive.recording(today(), uniqueid="12.%d" % n, clock="1200%02d" % n))
        time.sleep(0.01)
    threads[-1].join()
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(names(archive.index().find(LEAD))) == set(base) | set(added)


def test_the_newest_folder_is_watched_whatever_the_clocks_say(archive):
    """Asterisk's clock or time zone ahead of the web server's: recordings land in a
    folder that is not today's here. The newest indexed folder is always checked."""
    ahead = today(5)
    archive.recording(ahead)
    index = archive.index()
    index.find(LEAD)
    settled = time.time() + 5
    index = archive.index(clock=lambda: settled)
    index.find(LEAD)                         # the folder is now settled
    new = archive.recording(ahead, uniqueid="13.1", clock="235959")
    assert names(index.find(LEAD))[-1] == new


def test_a_segment_retired_during_a_lookup_means_reading_the_state_again(archive,
                                                                          monkeypatch):
    first = archive.recording(today(-2))
    index = archive.index()
    index.find(LEAD)
    real = recording_index.Segment.lines_for
    calls = []

    def retired_once(segment, key):
        calls.append(segment.id)
        if len(calls) == 1:
            # Another process writes a new state meanwhile, then this segment is gone.
            archive.recording(today(), uniqueid="14.1")
            archive.index().find("19995550000")
            raise recording_index._SegmentGone(segment.id)
        return real(segment, key)

    rebuilds = []
    monkeypatch.setattr(recording_index.Segment, "lines_for", retired_once)
    monkeypatch.setattr(index, "_rebuild_locked", lambda *a: rebuilds.append(a))
    assert names(index.find(LEAD))[0] == first
    assert rebuilds == [] and len(calls) >= 2


def test_find_equals_scan_equals_brute_force_on_random_names(archive):
    import random
    from callexchange.recordings.names import numbers_match, parse_name

    rng = random.Random(20240703)
    pool = ["1212777%04d" % rng.randrange(10000) for _ in range(40)] + \
        ["%d" % rng.randrange(100, 99999) for _ in range(15)]

    def written(number):
        style = rng.randrange(5)
        if style == 0 and len(number) == 11:
            return "+%s-%s-%s-%s" % (number[0], number[1:4], number[4:7], number[7:])
        if style == 1:
            return "00" + number
        if style == 3 and len(number) == 11:
            return "%s-%s-%s" % (number[1:4], number[4:7], number[7:])      # 212-777-3456
        if style == 2:
            return number[-10:] if len(number) > 10 else number
        return number

    days = ["202401%02d" % d for d in range(1, 8)] + [today()]
    for n in range(400):
        dst, src = written(rng.choice(pool)), rng.choice([written(rng.choice(pool)),
                                                          "unknown", "2001"])
        archive.recording(rng.choice(days), dst=dst, src=src, uniqueid="1.%d" % n,
                          prefix=rng.choice(["out", "in", "q", "rg", "external"]),
                          clock="%02d%02d%02d" % (rng.randrange(24), rng.randrange(60),
                                                  rng.randrange(60)))
    index = archive.index()
    everything = [(day, name) for day in days for name in os.listdir(archive.path(day))]
    queries = pool + [p[-7:] for p in pool[:10]] + ["9" + p for p in pool[:10]] + \
        [p[:-1] for p in pool[:10]] + ["2001"]
    for phone in queries:
        brute = sorted((day, name) for day, name in everything
                       if any(numbers_match(phone, d) for d in parse_name(name).numbers))
        assert index.find(phone) == brute, phone
        assert index.scan(phone) == brute, phone
