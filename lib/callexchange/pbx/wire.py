"""The AMI wire format, as pure functions over bytes: shared by the client (`pbx.ami`)
and the sandbox PBX's server.

`encode_action` / `encode_message` build the bytes of one message (refusing CR, LF and
NUL, so nothing can inject a header); `MessageParser` splits a received byte stream into
`Message` objects. Stdlib only, nothing slow to import: a CGI process loads it per request.

>>> encode_action("Ping", [("ActionID", "1")])
b'Action: Ping\\r\\nActionID: 1\\r\\n\\r\\n'
>>> parser = MessageParser()
>>> [m["Ping"] for m in parser.feed(b"Response: Success\\r\\nPing: Pong\\r\\n\\r\\n")]
['Pong']
"""


BANNER_PREFIX = "Asterisk Call Manager"


# Asterisk reads a manager line into a 1025-byte buffer: with its CR LF a line must fit
# in 1024 bytes, longer ones make Asterisk discard the whole action.
MAX_LINE_BYTES = 1022


# Asterisk keeps at most 128 headers of an action (AST_MAX_MANHEADERS).
MAX_HEADERS = 128
# A received line longer than this is not AMI: give up rather than buffer without end.
MAX_RECEIVED_LINE = 65536
_FORBIDDEN = ("\r", "\n", "\0")


def _check_text(what, value):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError("%s must be a string, got %s" % (what, type(value).__name__))
    value = str(value)
    for char in _FORBIDDEN:
        if char in value:
            raise ValueError("%s must not contain CR, LF or NUL: %r" % (what, value))
    return value


def _check_name(name):
    name = _check_text("header name", name)
    if not name.strip() or ":" in name:
        raise ValueError("header name must be non-empty and without ':': %r" % name)
    return name


# Header names already checked: they are the code's own constants, so after the first
# message each is a set lookup (the persistent mode encodes ~40 headers per call).
_CHECKED_NAMES = set()
_MAX_CHECKED_NAMES = 256
# A line of at most this many characters cannot exceed MAX_LINE_BYTES in UTF-8.
_SHORT_LINE = MAX_LINE_BYTES // 4


def encode_message(pairs):
    """The wire bytes of one AMI message: `Key: value` lines and a blank line.

    Raises ValueError when a name or value holds CR, LF or NUL, a name is empty or holds
    ':', a line exceeds Asterisk's 1024-byte line, or there are more than 128 headers.

    >>> encode_message([("Response", "Success"), ("Ping", "Pong")])
    b'Response: Success\\r\\nPing: Pong\\r\\n\\r\\n'
    """
    pairs = list(pairs)
    if len(pairs) > MAX_HEADERS:
        raise ValueError("an AMI message holds at most %d headers, got %d"
                         % (MAX_HEADERS, len(pairs)))
    lines = []
    for name, value in pairs:
        if name.__class__ is not str or name not in _CHECKED_NAMES:
            name = _check_name(name)
            if len(_CHECKED_NAMES) < _MAX_CHECKED_NAMES:
                _CHECKED_NAMES.add(name)
        if value.__class__ is not str or "\r" in value or "\n" in value or "\0" in value:
            value = _check_text("value of header %r" % name, value)
        line = name + ": " + value
        if len(line) > _SHORT_LINE and len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise ValueError("header %r is %d bytes; Asterisk accepts at most %d per line"
                             % (name, len(line.encode("utf-8")), MAX_LINE_BYTES))
        lines.append(line)
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8")


def encode_action(name, fields):
    """The wire bytes of the action `name` with `fields`, a list of (header, value) pairs
    in order; a header may repeat (several `Variable`). Same checks as `encode_message`.

    >>> encode_action("Originate", [("Variable", "A=1"), ("Variable", "B=2")])
    b'Action: Originate\\r\\nVariable: A=1\\r\\nVariable: B=2\\r\\n\\r\\n'
    """
    return encode_message([("Action", name)] + list(fields))


class Message:
    """One received AMI message: `pairs`, the (key, value) headers in wire order, and
    `extra`, the lines that had no `key: value` shape. Lookups by key ignore case, as
    Asterisk does; the first occurrence wins.

    >>> m = Message([("Event", "Newchannel"), ("ChanVariable(CDR(x))", "1")])
    >>> m["event"], m.get("ChanVariable(CDR(x))"), m.get("Response")
    ('Newchannel', '1', None)
    """

    __slots__ = ("pairs", "extra")

    def __init__(self, pairs, extra=()):
        self.pairs = list(pairs)
        self.extra = list(extra)

    def get(self, key, default=None):
        key = key.lower()
        for name, value in self.pairs:
            if name.lower() == key:
                return value
        return default

    def get_all(self, key):
        key = key.lower()
        return [value for name, value in self.pairs if name.lower() == key]

    def as_dict(self):
        """{key: value}, first occurrence of each key, keys as received."""
        result = {}
        for name, value in self.pairs:
            result.setdefault(name, value)
        return result

    def __getitem__(self, key):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key):
        return self.get(key) is not None

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self):
        return len(self.pairs)

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return self.pairs == other.pairs and self.extra == other.extra

    def __repr__(self):
        return "Message(%r%s)" % (self.pairs, ", extra=%r" % self.extra if self.extra else "")

    @property
    def response(self):
        return self.get("Response")

    @property
    def event(self):
        return self.get("Event")


def parse_line(line):
    """(key, value) for one header line, or None for a line without `key:`.

    The key ends at the first ':', so `ChanVariable(CDR(foo)): bar` gives
    ('ChanVariable(CDR(foo))', 'bar') and values keep their own colons.

    >>> parse_line("Timestamp: 12:30")
    ('Timestamp', '12:30')
    >>> parse_line("--END COMMAND--") is None
    True
    """
    key, colon, value = line.partition(":")
    key = key.strip()
    if not colon or not key:
        return None
    return key, value.lstrip(" \t")


class MessageParser:
    """Splits a byte stream into Messages at blank lines (CR LF CR LF; a bare LF is
    accepted too). Feed it whatever recv() returned; it keeps partial lines and messages.

    With `expect_banner`, the first line of the stream (Asterisk's
    `Asterisk Call Manager/5.0.1`, which ends with a single CR LF) is stored in `banner`
    instead of starting a message.

    >>> p = MessageParser(expect_banner=True)
    >>> p.feed(b"Asterisk Call Manager/5.0.1\\r\\nResponse: Succ")
    []
    >>> p.banner, p.feed(b"ess\\r\\n\\r\\n")
    ('Asterisk Call Manager/5.0.1', [Message([('Response', 'Success')])])
    """

    def __init__(self, expect_banner=False):
        self.banner = None
        self._want_banner = expect_banner
        self._buffer = b""
        self._pairs = []
        self._extra = []

    @property
    def partial(self):
        """True while part of a message has been received but not its end."""
        return bool(self._buffer or self._pairs or self._extra)

    def feed(self, data):
        """Add received bytes; return the messages they completed, in order.
        Raises ValueError on a line longer than MAX_RECEIVED_LINE bytes."""
        self._buffer += data
        messages = []
        start = 0
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            raw = buffer[start:end]
            start = end + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            line = raw.decode("utf-8", "replace")
            if self._want_banner:
                self._want_banner = False
                self.banner = line
                continue
            if not line:
                if self._pairs or self._extra:
                    messages.append(Message(self._pairs, self._extra))
                    self._pairs, self._extra = [], []
                continue
            pair = parse_line(line)
            if pair is None:
                self._extra.append(line)
            else:
                self._pairs.append(pair)
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_RECEIVED_LINE:
            raise ValueError("received a line longer than %d bytes without an end"
                             % MAX_RECEIVED_LINE)
        return messages


def parse_messages(data):
    """The complete messages in `data` (a whole byte string); a trailing partial one is
    dropped. A convenience over MessageParser for tests and fixtures."""
    return MessageParser().feed(data)
