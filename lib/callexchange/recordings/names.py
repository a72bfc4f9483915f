"""Recording file names and phone numbers in them: pure functions.

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

from callexchange import percent


AUDIO_EXTENSIONS = frozenset(("wav", "gsm", "mp3", "wav49"))
MIN_SUFFIX = 7            # digits a suffix match needs (and the index key length)
PHONE_MIN, PHONE_MAX = 3, 20
STORED_MAX = 32           # longer "numbers" in names are not numbers
_PUNCTUATION = str.maketrans("", "", " \t-.()/+")
DIGITS = frozenset("0123456789")


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
    if len(field) != 8 or not set(field) <= DIGITS:
        return False
    return valid_date(int(field[:4]), int(field[4:6]), int(field[6:]))


def _is_time(field):
    return (len(field) == 6 and set(field) <= DIGITS and int(field[:2]) < 24
            and int(field[2:4]) < 60 and int(field[4:]) < 60)


def is_uniqueid(field):
    seconds, dot, sequence = field.partition(".")
    return bool(dot and seconds and sequence and set(seconds) <= DIGITS
                and set(sequence) <= DIGITS)


def _has_digit(field):
    return any(c in DIGITS for c in field)


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
        if is_uniqueid(fields[-1]):
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
    if not digits or not set(digits) <= DIGITS:
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


DEFAULT_BASE_URL = "/wav-files"


def recording_url(base_url, relative_path):
    """The URL of the recording at `relative_path` under the root (`YYYY/MM/DD/<name>`):
    `[recordings] base_url` (the URL path /wav-files/ when unset) + the path,
    percent-encoded where it must be (FreePBX names need nothing). What find_phone_files.pl
    lists and the extended webhooks carry, the same for both.

    >>> recording_url("https://pbx.example/wav-files/", "2024/07/03/out-1 2.wav")
    'https://pbx.example/wav-files/2024/07/03/out-1%202.wav'
    >>> recording_url("https://pbx.example/wav-files", "")   # a call without a recording
    ''
    """
    if not relative_path:
        return ""
    return "%s/%s" % ((base_url or DEFAULT_BASE_URL).rstrip("/"),
                      percent.encode(relative_path.lstrip("/"), safe="/+"))
