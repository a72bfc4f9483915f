"""find_phone_files.pl: a number's recordings, from the archive under [recordings] root.

`find_phone_files` is the whole endpoint for one request object (plain body or one
JSON-RPC entry) and `lookup` the part the admin tool shares; the archive itself is read
through the index (`recordings.index`, never walked per request) and `recordings.audio`
(durations). Errors are rendered into the legacy shape here, in `error_reply`.
"""

from callexchange.errors import ApiError, ServerConfigError, report, status_line
from callexchange.params import check_no_control, is_blank, text_field
from callexchange.phone import read_number
from callexchange.statedir import StateDir
from callexchange.recordings.names import (DIGITS, PHONE_MAX, PHONE_MIN, is_uniqueid,
                                           number_digits, recording_url,
                                           parse_name, valid_date)


MISSING_ERROR = "Missing parameters: api-key or phone"
MAX_LIMIT = 1000          # also the default: the newest 1000 when more match


class Query:
    """A checked request: `phone` digits, `first_day`/`last_day` as YYYYMMDD or None,
    `limit`, `uniqueid` or None."""

    def __init__(self, phone, first_day=None, last_day=None, limit=MAX_LIMIT, uniqueid=None):
        self.phone = phone
        self.first_day = first_day
        self.last_day = last_day
        self.limit = limit
        self.uniqueid = uniqueid


def phone_field(params):
    """The phone's digits: its characters read as the call endpoint reads a destination
    (callexchange.phone), then a leading 00 dropped as in recording names
    (names.number_digits), so that the two compare."""
    text = text_field(params, "phone", max_chars=64)
    read = read_number(text or "")
    digits = None if read is None else number_digits(read[0])
    if digits is None or not PHONE_MIN <= len(digits) <= PHONE_MAX:
        raise ApiError(400, "Field 'phone' must be a phone number of %d to %d digits "
                            "(a leading + or 00, spaces, dashes, dots, brackets allowed)"
                       % (PHONE_MIN, PHONE_MAX), field="phone")
    return digits


def date_field(params, name):
    """YYYY-MM-DD as YYYYMMDD, or None when absent."""
    text = text_field(params, name, max_chars=10)
    if text is None:
        return None
    parts = text.split("-")
    if (len(parts) != 3 or [len(p) for p in parts] != [4, 2, 2]
            or not all(set(p) <= DIGITS for p in parts)
            or not valid_date(int(parts[0]), int(parts[1]), int(parts[2]))):
        raise ApiError(400, "Field %r must be a date YYYY-MM-DD, got %r" % (name, text),
                       field=name)
    return "".join(parts)


def limit_field(params):
    value = params.get("limit")
    if is_blank(value):
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
    if not is_uniqueid(bare) or (system and not all(c.isascii() and (c.isalnum() or c in "_-")
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


def recording_entry(base_url, day, name, time_text, duration, uniqueid, sign=None):
    """One item of the legacy reply. `day` is the day folder, YYYYMMDD. `sign`, for
    `[recordings] access = signed`, maps the path under the root to the URL's query."""
    path = "%s/%s/%s/%s" % (day[:4], day[4:6], day[6:], name)
    return {
        "url": recording_url(base_url, path) + ("?" + sign(path) if sign else ""),
        "time": time_text,
        "duration": duration,
        "date": "%s/%s/%s" % (day[6:], day[4:6], day[:4]),
        "uniqueid": uniqueid,
    }


def error_reply(error, params=None):
    """The legacy error object of find_phone_files.pl (plus `field` where one was wrong)."""
    body = {"status": status_line(error.status), "icon": "error", "error": error.error}
    for name in ("field", "error_id"):
        if error.extra.get(name):
            body[name] = error.extra[name]
    return body


def find_phone_files(config, params, api_key, log=None):
    """The endpoint for one request object (names normalised). Returns (status, body).
    The key is checked before anything else: an unauthenticated request reads the keys
    file, nothing more. `log(text)`: the operator's log (a server configuration error's
    detail, under the id the reply gives)."""
    try:
        if is_blank(api_key) or is_blank(params.get("phone")):
            raise ApiError(400, MISSING_ERROR)
        from callexchange import keys
        keys.authenticate(config.auth.keys_file, api_key)
        return 200, lookup(config, read_query(params))
    except ApiError as error:
        report(error, log)
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
    from callexchange.recordings import audio
    from callexchange.recordings.index import RecordingIndex

    root = config.recordings.root
    sign = _url_signer(config)
    if index is None:
        index = RecordingIndex(root, StateDir(config.state.dir).recordings_index)
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
                                           parsed.uniqueid, sign))
    replies.reverse()
    if gone:
        index.forget(gone)
    return replies


def _url_signer(config):
    """None for public and key access; for signed access, a function of a recording's
    path under the root giving its URL's `exp=...&sig=...` (one key read per lookup)."""
    if getattr(config.recordings, "access", "public") != "signed":
        return None
    import time
    from callexchange.recordings import access
    try:
        key = access.url_key(config.state.dir)
    except OSError as error:
        raise ServerConfigError("cannot read or make the recordings URL key in [state] dir "
                                "%s: %s" % (config.state.dir, error.strerror or error)) from None
    now, ttl = time.time(), config.recordings.url_ttl
    return lambda path: access.signed_query(key, path, now, ttl)


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
