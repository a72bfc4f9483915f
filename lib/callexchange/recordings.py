"""find_phone_files.pl: a number's recordings, from the archive under [recordings] root.

The decisions are pure functions: reading a FreePBX file name from the right, comparing
phone numbers, checking the request fields, building the legacy reply. `find_phone_files`
is the whole endpoint for one request object (plain body or one JSON-RPC entry) and
`lookup` the part the admin tool shares; the archive itself is read through
`recording_index` (never walked per request) and `audio` (durations).

Names: `YYYY/MM/DD/<prefix>-<dst>-<src>-<YYYYMMDD>-<HHMMSS>-<uniqueid>.<ext>`. The
extension follows the last dot (a uniqueid such as 1720039056.22191 holds one); the date,
time and uniqueid are found from the right, so a dash inside a number or a prefix does not
shift them; an Asterisk `systemname` uniqueid (`pbx1-1720039056.22191`) keeps its dash.
More than two fields between the prefix and the date (`212-777-3456-2001`) cannot be told
apart for sure: every split of them into dst and src is a candidate (`numbers`), except
splits no FreePBX name has (digits and letters mixed on one side, a `+` inside a number).

Matching: digits only, after dropping `+`, a leading `00` and punctuation; equal, or one
ends with the other and the shorter has at least 7 digits (`12127773456` finds
`2127773456`); never a substring. Numbers shorter than 7 digits match only exactly.
"""

from .errors import ApiError, status_line
from .params import check_no_control, text_field

MISSING_ERROR = "Missing parameters: api-key or phone"
AUDIO_EXTENSIONS = frozenset(("wav", "gsm", "mp3", "wav49"))
MIN_SUFFIX = 7            # digits a suffix match needs (and the index key length)
PHONE_MIN, PHONE_MAX = 3, 20
STORED_MAX = 32           # longer "numbers" in names are not numbers
MAX_LIMIT = 1000          # also the default: the newest 1000 when more match
DEFAULT_BASE_URL = "/wav-files"

_PUNCTUATION = str.maketrans("", "", " \t-.()/+")
_DIGITS = frozenset("0123456789")


class RecordingName:
    """A parsed recording file name. `date` (YYYYMMDD) and `time` (HHMMSS) are "" when
    the name has none; `uniqueid` is "" when it has none. `dst` and `src` are the likely
    split of the fields between prefix and date; `middle` holds those fields when they
    are more than two (the split is then ambiguous), else ()."""

    __slots__ = ("name", "prefix", "dst", "src", "date", "time", "uniqueid", "extension",
                 "middle")

    def __init__(self, name, prefix, dst, src, date, time, uniqueid, extension, middle=()):
        self.name = name
        self.prefix = prefix
        self.dst = dst
        self.src = src
        self.date = date
        self.time = time
        self.uniqueid = uniqueid
        self.extension = extension
        self.middle = tuple(middle)

    @property
    def numbers(self):
        """The digits of every number the recording can be for: dst and src, and with
        more than two middle fields the dst and src of every plausible split of them (so
        `212-777-3456-2001` gives 2127773456 and 2001, and fragments such as 212). A
        phone matches the recording when it matches one of them (`numbers_match`).

        >>> parse_name("out-212-777-3456-2001-20240706-121212-1720300000.4.wav").numbers
        ['212', '77734562001', '212777', '34562001', '2127773456', '2001']
        """
        found = []

        def add(text):
            digits = number_digits(text)
            if digits and digits not in found:
                found.append(digits)

        add(self.dst)
        add(self.src)
        middle = self.middle
        for split in range(1, len(middle)):
            dst, src = middle[:split], middle[split:]
            if _plausible(dst) and _plausible(src):
                add("-".join(dst))
                add("-".join(src))
        return found

    def __repr__(self):
        return "RecordingName(%r)" % self.name


def _is_date(field):
    if len(field) != 8 or not set(field) <= _DIGITS:
        return False
    return valid_date(int(field[:4]), int(field[4:6]), int(field[6:]))


def _is_time(field):
    return (len(field) == 6 and set(field) <= _DIGITS and int(field[:2]) < 24
            and int(field[2:4]) < 60 and int(field[4:]) < 60)


def _is_uniqueid(field):
    seconds, dot, sequence = field.partition(".")
    return bool(dot and seconds and sequence and set(seconds) <= _DIGITS
                and set(sequence) <= _DIGITS)


def _has_digit(field):
    return any(c in _DIGITS for c in field)


def _plausible(fields):
    """Whether dash-separated fields can be one dst or src: a number (a `+` only at its
    start) or a word without digits (unknown, anonymous); not digits and letters mixed."""
    if any(field.startswith("+") for field in fields[1:]):
        return False
    text = "-".join(fields)
    return number_digits(text) is not None or not _has_digit(text)


def parse_name(name):
    """Read a recording's file name from the right; None when it is no audio file.

    >>> r = parse_name("out-12127773456-unknown-20240703-203742-1720039056.22191.wav")
    >>> r.prefix, r.dst, r.src, r.date, r.time, r.uniqueid, r.extension
    ('out', '12127773456', 'unknown', '20240703', '203742', '1720039056.22191', 'wav')
    """
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or extension.lower() not in AUDIO_EXTENSIONS:
        return None
    fields = stem.split("-")
    date = time = uniqueid = ""
    head = fields
    # The rightmost <YYYYMMDD>-<HHMMSS> pair; what follows it is the uniqueid (one field,
    # or two when Asterisk's systemname put a dash in it).
    for index in range(len(fields) - 2, -1, -1):
        if _is_date(fields[index]) and _is_time(fields[index + 1]):
            date, time = fields[index], fields[index + 1]
            uniqueid = "-".join(fields[index + 2:])
            head = fields[:index]
            break
    else:
        if _is_uniqueid(fields[-1]):
            uniqueid, head = fields[-1], fields[:-1]
    prefix, dst, src, rest = _split_head(head)
    return RecordingName(name, prefix, dst, src, date, time, uniqueid, extension.lower(),
                         rest if len(rest) > 2 else ())


def _split_head(head):
    """`<prefix>-<dst>-<src>` where each part may itself hold dashes.

    The prefix is the leading fields without a digit (out, in, exten, q, rg, external,
    ondemand, ...). Of the rest, with more than two fields: a last field without a digit
    (unknown, anonymous, empty) is src; else a field starting with `+` starts src; else
    dst is the first field (FreePBX's dst is the dialled extension, which has no dash) and
    src the rest (the caller ID, free text). Also returns the fields after the prefix:
    with more than two, `RecordingName.numbers` tries every split of them.
    """
    index = 0
    while index < len(head) - 1 and not _has_digit(head[index]):
        index += 1
    prefix, rest = "-".join(head[:index]), head[index:]
    if not rest:
        return prefix, "", "", rest
    if len(rest) == 1:
        return prefix, rest[0], "", rest
    if len(rest) == 2:
        return prefix, rest[0], rest[1], rest
    if not _has_digit(rest[-1]):
        return prefix, "-".join(rest[:-1]), rest[-1], rest
    plus = [i for i in range(1, len(rest)) if rest[i].startswith("+")]
    if len(plus) == 1:
        return prefix, "-".join(rest[:plus[0]]), "-".join(rest[plus[0]:]), rest
    return prefix, rest[0], "-".join(rest[1:]), rest


def number_digits(text):
    """The digits of a phone number as written in a name or sent by a client: `+`,
    spaces, dashes, dots, brackets and slashes dropped, then a leading `00`. None when
    anything else is left (letters: `unknown`, `anonymous`, `SIP/...`) or no digit.

    >>> number_digits("+1 (212) 777-3456"), number_digits("0049301234"), number_digits("unknown")
    ('12127773456', '49301234', None)
    """
    digits = text.translate(_PUNCTUATION)
    if not digits or not set(digits) <= _DIGITS:
        return None
    if digits.startswith("00"):
        digits = digits[2:]
    if not digits or len(digits) > STORED_MAX:
        return None
    return digits


def index_key(digits):
    """The index key of a number: its last 7 digits (the whole number when shorter).
    Two numbers that match always share it."""
    return digits[-MIN_SUFFIX:]


def numbers_match(phone, stored):
    """True when two digit strings are the same number: equal, or one ends with the
    other and the shorter has at least 7 digits. Never a substring.

    >>> numbers_match("12127773456", "2127773456"), numbers_match("12127773456", "912127773456999")
    (True, False)
    """
    if phone == stored:
        return True
    if len(phone) < len(stored):
        phone, stored = stored, phone
    return len(stored) >= MIN_SUFFIX and phone.endswith(stored)


def valid_date(year, month, day):
    if not 1 <= month <= 12 or day < 1 or year < 1:
        return False
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return day <= (29 if leap else 28)
    return day <= (30 if month in (4, 6, 9, 11) else 31)


# --- the request ---

class Query:
    """A checked request: `phone` digits, `first_day`/`last_day` as YYYYMMDD or None,
    `limit`, `uniqueid` or None."""

    def __init__(self, phone, first_day=None, last_day=None, limit=MAX_LIMIT, uniqueid=None):
        self.phone = phone
        self.first_day = first_day
        self.last_day = last_day
        self.limit = limit
        self.uniqueid = uniqueid


def _blank(value):
    return value is None or (isinstance(value, str) and not value.strip())


def phone_field(params):
    text = text_field(params, "phone", max_chars=64)
    digits = number_digits(text or "")
    if digits is None or not PHONE_MIN <= len(digits) <= PHONE_MAX:
        raise ApiError(400, "Field 'phone' must be a phone number of %d to %d digits "
                            "(+, 00, spaces, dashes, dots, brackets allowed)"
                       % (PHONE_MIN, PHONE_MAX), field="phone")
    return digits


def date_field(params, name):
    """YYYY-MM-DD as YYYYMMDD, or None when absent."""
    text = text_field(params, name, max_chars=10)
    if text is None:
        return None
    parts = text.split("-")
    if (len(parts) != 3 or [len(p) for p in parts] != [4, 2, 2]
            or not all(set(p) <= _DIGITS for p in parts)
            or not valid_date(int(parts[0]), int(parts[1]), int(parts[2]))):
        raise ApiError(400, "Field %r must be a date YYYY-MM-DD, got %r" % (name, text),
                       field=name)
    return "".join(parts)


def limit_field(params):
    value = params.get("limit")
    if _blank(value):
        return MAX_LIMIT
    if isinstance(value, str):
        check_no_control("limit", value)
        value = value.strip()
        number = int(value) if value.isdigit() and value.isascii() else None
    elif isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        number = None
    if number is None or not 1 <= number <= MAX_LIMIT:
        raise ApiError(400, "Field 'limit' must be a whole number from 1 to %d" % MAX_LIMIT,
                       field="limit")
    return number


def uniqueid_field(params):
    text = text_field(params, "uniqueid", max_chars=80)
    if text is None:
        return None
    system, _dash, bare = text.rpartition("-")
    if not _is_uniqueid(bare) or (system and not all(c.isascii() and (c.isalnum() or c in "_-")
                                                     for c in system)):
        raise ApiError(400, "Field 'uniqueid' must look like 1720039056.22191", field="uniqueid")
    return text


def read_query(params):
    """Check every field of a request (names already normalised). Raises ApiError."""
    phone = phone_field(params)
    first_day = date_field(params, "from")
    last_day = date_field(params, "to")
    if first_day and last_day and first_day > last_day:
        raise ApiError(400, "Field 'from' must not be after 'to'", field="from")
    return Query(phone, first_day, last_day, limit_field(params), uniqueid_field(params))


# --- the reply ---

_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+")


_URL_SAFE_TEXT = frozenset(chr(b) for b in _URL_SAFE)


def url_path(text):
    """Percent-encode a file name for a URL (FreePBX names need none)."""
    if _URL_SAFE_TEXT.issuperset(text):
        return text
    return "".join(chr(b) if b in _URL_SAFE else "%%%02X" % b for b in text.encode("utf-8"))


def recording_entry(base_url, day, name, time_text, duration, uniqueid):
    """One item of the legacy reply. `day` is the day folder, YYYYMMDD."""
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    return {
        "url": "%s/%s/%s/%s/%s" % (base, day[:4], day[4:6], day[6:], url_path(name)),
        "time": time_text,
        "duration": duration,
        "date": "%s/%s/%s" % (day[6:], day[4:6], day[:4]),
        "uniqueid": uniqueid,
    }


def error_reply(error, params=None):
    """The legacy error object of find_phone_files.pl (plus `field` where one was wrong)."""
    body = {"status": status_line(error.status), "icon": "error", "error": error.error}
    if error.extra.get("field"):
        body["field"] = error.extra["field"]
    return body


# --- the endpoint ---

def find_phone_files(config, params, api_key):
    """The endpoint for one request object (names normalised). Returns (status, body)."""
    try:
        if _blank(api_key) or _blank(params.get("phone")):
            raise ApiError(400, MISSING_ERROR)
        from . import keys
        keys.authenticate(config.auth.keys_file, api_key)
        return 200, lookup(config, read_query(params))
    except ApiError as error:
        return error.status, error_reply(error)


def lookup(config, query, index=None):
    """The reply list for a checked Query: oldest first, the newest `limit` of them.

    Day folders are taken from the newest, so a number with thousands of recordings
    (an agent's extension) costs the `limit` newest, not all of them. Every returned
    file is lstat'ed first: one deleted since it was indexed, or that is no regular file
    (a folder or symlink put in its place), is skipped, and its day folder is indexed
    again.
    """
    import os
    from . import audio
    from .recording_index import RecordingIndex

    root = config.recordings.root
    if index is None:
        index = RecordingIndex(root, os.path.join(config.state.dir, "recordings-index"))
    found = index.find(query.phone, query.first_day, query.last_day)     # by day
    replies, gone = [], set()
    end = len(found)
    while end > 0 and len(replies) < query.limit:
        day = found[end - 1][0]
        start = end
        while start > 0 and found[start - 1][0] == day:
            start -= 1
        items = []
        for _day, name in found[start:end]:
            parsed = parse_name(name)
            if parsed is None or (query.uniqueid is not None
                                  and parsed.uniqueid != query.uniqueid):
                continue
            clock, info = parsed.time, None
            if not clock:
                # A name without a time sorts (and shows) by the file's mtime.
                info = _stat(root, day, name)
                if info is None:
                    gone.add(day)
                    continue
                clock = _clock(info.st_mtime)
            items.append((clock, name, parsed, info))
        end = start
        items.sort(key=lambda item: (item[0], item[1]))
        for clock, name, parsed, info in reversed(items):
            if len(replies) >= query.limit:
                break
            if info is None:
                info = _stat(root, day, name)
            if info is None:
                gone.add(day)          # deleted since it was indexed: never returned
                continue
            path = os.path.join(root, day[:4], day[4:6], day[6:], name)
            replies.append(recording_entry(config.recordings.base_url, day, name,
                                           "%s:%s:%s" % (clock[:2], clock[2:4], clock[4:]),
                                           audio.duration_seconds(path, info.st_size),
                                           parsed.uniqueid))
    replies.reverse()
    if gone:
        index.forget(gone)
    return replies


def _stat(root, day, name):
    """The lstat of a recording, or None when it is gone or no regular file (a folder, a
    symlink: never returned, wherever it points)."""
    import os
    import stat
    try:
        info = os.lstat(os.path.join(root, day[:4], day[4:6], day[6:], name))
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _clock(mtime):
    import time
    local = time.localtime(mtime)
    return "%02d%02d%02d" % (local.tm_hour, local.tm_min, local.tm_sec)
