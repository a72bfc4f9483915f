"""The gateway's configuration: one INI file, read once, validated in one place.

The parser is our own (not configparser) for two reasons: every error must name the file
and the line, which configparser cannot do for values, and a CGI process pays for every
import it makes, so this module imports nothing beyond `os`.

Usage::

    config = load_config()          # $CALLEXCHANGE_CONFIG or /etc/callexchange/callexchange.ini
    config.ami.host, config.dial.default_region, config.ani.pools["DE"]
"""

import os

DEFAULT_PATH = "/etc/callexchange/callexchange.ini"

_TRUE = frozenset(("1", "yes", "true", "on"))
_FALSE = frozenset(("0", "no", "false", "off"))


class ConfigError(Exception):
    """A config problem, reported as `<file>:<line>: <what is wrong>`: the section and key,
    never the value (it may be a secret, and the message reaches error.log)."""

    def __init__(self, path, line, message):
        self.path = path
        self.line = line
        self.message = message
        where = "%s:%d" % (path, line) if line else str(path)
        super().__init__("%s: %s" % (where, message))


class _Section:
    """Attribute access over one section's validated values."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __repr__(self):
        shown = {k: ("***" if k == "secret" and v else v) for k, v in self.__dict__.items()}
        return "<%s>" % shown


class Config:
    """The whole validated configuration. Sections: ami, dial, ani, recordings, webhook,
    auth, state, https, policy. `path` is the file it came from; `lines` maps (section, key) to
    the line that set it, so a check made later (e.g. against phonenumbers) can name it
    too; `problems` lists the ConfigErrors of a leniently loaded file (empty otherwise)."""

    def __init__(self, path, sections, lines=None):
        self.path = path
        self.lines = lines or {}
        self.problems = ()
        for name, section in sections.items():
            setattr(self, name, section)

    def error(self, section, key, message):
        """A ConfigError naming this file and the line of `[section] key`."""
        return ConfigError(self.path, self.lines.get((section, key), 0),
                           "[%s] %s %s" % (section, key, message))


# --- value checkers: each returns the converted value or raises ValueError(reason) ---

def _text(value):
    return value


def _required_text(value):
    if not value:
        raise ValueError("must not be empty")
    return value


def _seconds(value):
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not 0 < number <= 3600:
        raise ValueError("must be more than 0 and at most 3600 seconds")
    return number


def _whole(low, high):
    def check(value):
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= number <= high:
            raise ValueError("must be between %d and %d" % (low, high))
        return number
    return check


def _boolean(value):
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be yes or no")


def _region(value):
    if len(value) != 2 or not value.isalpha() or not value.isascii():
        raise ValueError("must be a two-letter ISO region code such as US or DE")
    return value.upper()


def _word(value):
    """A dialplan context name: it reaches an AMI header, so letters, digits, - and _ only."""
    if not value or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
        raise ValueError("must be letters, digits, '-' or '_'")
    return value


def _template(*placeholders, variable_safe=False):
    """A dial string with {placeholders}. `variable_safe`: it also travels in an
    Originate `Variable` header (agent_channel, as CX_AGENT_DIAL), which Asterisk splits
    on commas and unquotes, so no ',', '"' or '\\'."""
    def check(value):
        for placeholder in placeholders:
            if "{%s}" % placeholder not in value:
                raise ValueError("must contain {%s}" % placeholder)
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must not contain control characters")
        if variable_safe and any(c in value for c in ',"\\'):
            raise ValueError("must not contain ',', '\"' or '\\' (it reaches the dialplan "
                             "in an AMI Variable header)")
        try:
            value.format(**{p: "1" for p in placeholders})
        except (KeyError, IndexError, ValueError):
            raise ValueError("may only use the placeholder(s) %s"
                             % ", ".join("{%s}" % p for p in placeholders)) from None
        return value
    return check


def _message_from(value):
    """The From of the agent's text message (MessageSend): a SIP URI with a user and a
    host, optionally after a display name (`"CallExchange" <sip:callexchange@pbx.lan>`);
    empty leaves Asterisk's own From (the softphone then shows the message as sent by
    itself)."""
    if not value:
        return value
    if any(c in value for c in "\r\n\0"):
        raise ValueError("must not contain control characters")
    uri = value
    if "<" in value or ">" in value:
        name, _, uri = value.rstrip().partition("<")
        if not uri.endswith(">") or ">" in name or ">" in uri[:-1]:
            raise ValueError("must be a SIP URI, optionally as 'Name <sip:user@host>'")
        uri = uri[:-1]
    scheme, colon, rest = uri.partition(":")
    user, at, host = rest.partition("@")
    if (scheme.lower() not in ("sip", "sips") or not colon or not user or not at
            or not host or any(c in rest for c in ' "<>')):
        raise ValueError("must be a SIP URI such as sip:callexchange@pbx.example.com, "
                         "optionally after a display name")
    return value


def _url(value):
    if value and not (value.startswith("http://") or value.startswith("https://")):
        raise ValueError("must start with http:// or https://")
    return value


def _path(value):
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


def _optional_path(value):
    return _path(value) if value else ""


def _domain(value):
    """Empty, or the DNS name the gateway serves over HTTPS (install.sh --domain)."""
    name = value.lower()
    labels = name.split(".")
    if name and (len(name) > 253 or len(labels) < 2 or not all(
            0 < len(label) <= 63 and label.isascii() and label[0] != "-" and label[-1] != "-"
            and all(c.isalnum() or c == "-" for c in label) for label in labels)):
        raise ValueError("must be a DNS name such as pbx1.example.com")
    return name


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _webhook_secret(value):
    """Empty (no signature), or a Standard Webhooks secret `whsec_<base64>`."""
    if not value:
        return value
    text = value[len("whsec_"):] if value.startswith("whsec_") else value
    import binascii
    try:
        if not text or not set(text) <= _BASE64 or len(text) % 4:
            raise ValueError
        key = binascii.a2b_base64(text)
    except (ValueError, binascii.Error):
        key = b""
    if not key:
        # The value is a secret: never echo it in an error.
        raise ValueError("must be whsec_<base64> (callexchange webhooks secret prints one)")
    return value


def _choice(*choices):
    def check(value):
        lowered = value.lower()
        if lowered not in choices:
            raise ValueError("must be one of %s" % ", ".join(choices))
        return lowered
    return check


def _port(value):
    return _whole(1, 65535)(value)


def _phone_pool(value):
    numbers = []
    for part in value.replace("\n", ",").split(","):
        number = part.strip().lstrip("+")
        if not number:
            continue
        if not number.isdigit() or not 6 <= len(number) <= 15 or not number.isascii():
            raise ValueError("each caller ID must be 6 to 15 digits")
        numbers.append(number)
    return tuple(numbers)


def _caller_ids(value):
    pool = _phone_pool(value)
    if not pool:
        raise ValueError("must list at least one caller ID")
    return pool


# Number types as phonenumbers names them (PhoneNumberType, lower case); "unknown" is a
# number no reading made valid, dialled as sent.
NUMBER_TYPES = ("fixed_line", "mobile", "fixed_line_or_mobile", "toll_free", "premium_rate",
                "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                "unknown")
# Refused unless `[policy] allowed_types` lists them (docs/decisions.md says why each).
COSTLY_TYPES = ("premium_rate", "shared_cost", "personal_number", "pager")
EVERY_REGION = "*"


def parse_region_list(value):
    """`*` (every region) as None, else a tuple of ISO regions (upper case, once each);
    `001` stands for phonenumbers' non-geographic numbers (+800, +881, +882...).

    >>> parse_region_list("gb, DE,GB")
    ('GB', 'DE')
    >>> parse_region_list(" * ") is None
    True
    """
    if value.strip() == EVERY_REGION:
        return None
    regions = []
    for part in value.replace("\n", ",").split(","):
        code = part.strip().upper()
        if not code:
            continue
        if code != "001" and (len(code) != 2 or not code.isalpha() or not code.isascii()):
            raise ValueError("must be * or a comma-separated list of two-letter ISO regions "
                             "(GB, DE) or 001 (non-geographic)")
        if code not in regions:
            regions.append(code)
    if not regions:
        raise ValueError("must be * (every region) or list at least one region")
    return tuple(regions)


def _number_types(value):
    if value.strip() == "*":
        return frozenset(NUMBER_TYPES)
    names = [part.strip().lower() for part in value.replace("\n", ",").split(",")
             if part.strip()]
    unknown = [name for name in names if name not in NUMBER_TYPES]
    if unknown:
        raise ValueError("knows the types %s (or *); %d listed are none of them"
                         % (", ".join(NUMBER_TYPES), len(unknown)))
    if not names:
        raise ValueError("must be * (every type) or list at least one type")
    return frozenset(names)


# section -> key -> (checker, default); a default of None means required.
SCHEMA = {
    "ami": {
        "host": (_required_text, "127.0.0.1"),
        "port": (_port, "5038"),
        "username": (_required_text, None),
        "secret": (_required_text, None),
        "connect_timeout": (_seconds, "3"),
        "timeout": (_seconds, "5"),
    },
    "dial": {
        "agent_channel": (_template("extension", variable_safe=True), "PJSIP/{extension}"),
        # /n: the Local pair must not be optimised away, its ;1 owns the call's hangup
        # webhook (the gateway adds /n to a Local channel without it, for older configs).
        "lead_channel": (_template("destination"),
                         "Local/{destination}@callexchange-outbound/n"),
        "outbound_context": (_word, "callexchange-outbound"),
        "agent_context": (_word, "callexchange-agent"),
        "message_to": (_template("extension"), "pjsip:{extension}"),
        "message_from": (_message_from, '"CallExchange" <sip:callexchange@localhost>'),
        "ring_timeout": (_whole(1, 600), "30"),
        "default_region": (_region, "US"),
        "dedupe_seconds": (_whole(0, 3600), "5"),
    },
    "ani": {
        "default": (_caller_ids, None),
        "daily_limit": (_whole(1, 10_000_000), "200"),
        "flagged_file": (_optional_path, ""),
    },
    "recordings": {
        "root": (_path, "/var/spool/asterisk/monitor"),
        "base_url": (_url, ""),
        # public: anyone with the URL (legacy); signed: URLs carry an expiring HMAC token;
        # key: fetching needs the api-key header. Apache must be set up to match (install.sh).
        "access": (_choice("public", "signed", "key"), "public"),
        "url_ttl": (_whole(60, 7 * 86400), "3600"),
    },
    "webhook": {
        "url": (_url, ""),
        "secret": (_webhook_secret, ""),
        "timeout": (_seconds, "5"),
        "extended": (_boolean, "no"),
        "verify_tls": (_boolean, "yes"),
    },
    "auth": {
        "keys_file": (_path, "/etc/callexchange/api-keys"),
    },
    "state": {
        "dir": (_path, "/var/lib/callexchange"),
    },
    # Written by install.sh --domain: the name served over HTTPS and the certificate Apache
    # presents for it (`callexchange check` reports its expiry).
    "https": {
        "domain": (_domain, ""),
        "certificate": (_optional_path, ""),
    },
    "policy": {
        "allowed_types": (_number_types,
                          ", ".join(t for t in NUMBER_TYPES if t not in COSTLY_TYPES)),
        "allowed_regions": (parse_region_list, EVERY_REGION),
    },
}


def _reporter(path, problems):
    """problem(line, message): raise the ConfigError, or add it to `problems` (a list)."""
    def problem(line, message):
        error = ConfigError(path, line, message)
        if problems is None:
            raise error from None
        problems.append(error)
    return problem


def parse_ini(text, path="<config>", problems=None):
    """Split INI text into {section: {key: (value, line)}}, keys lower-cased.

    `key = value` or `key: value`; `#` or `;` starts a comment line; an indented line
    continues the previous value. No inline comments: secrets may contain `#`.
    A malformed line raises ConfigError; given a list as `problems`, the error is added
    to it instead and the line skipped (a broken section header or a repeated section
    skips the lines up to the next header).

    >>> parse_ini("[ami]\\nhost = pbx\\n")["ami"]["host"]
    ('pbx', 2)
    """
    problem = _reporter(path, problems)
    sections = {}
    current = None
    last_key = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if raw[0] in " \t" and last_key is not None:
            value, line = current[last_key]
            current[last_key] = ((value + "\n" + stripped).strip(), line)
            continue
        if stripped.startswith("["):
            last_key = None
            if not stripped.endswith("]"):
                problem(number, "section header must end with ']'")
                current = {}  # (lenient: the lines up to the next header are skipped)
                continue
            name = stripped[1:-1].strip().lower()
            if name in sections:
                problem(number, "section [%s] appears twice" % name)
                current = {}
                continue
            current = sections[name] = {}
            continue
        separator = min((i for i in (raw.find("="), raw.find(":")) if i > 0), default=-1)
        if separator < 0:
            # Not quoted: the line may be a secret whose '=' was forgotten.
            problem(number, "expected 'key = value' (the line has no '=' or ':'; its text "
                            "is not shown, it may hold a secret)")
            continue
        if current is None:
            problem(number, "key outside of any [section]")
            continue
        key = raw[:separator].strip().lower()
        if key in current:
            problem(number, "key %r appears twice in this section" % key)
            continue
        current[key] = (raw[separator + 1:].strip(), number)
        last_key = key
    return sections


def config_from_text(text, path="<config>", lenient=False):
    """Validate INI text against SCHEMA and return a Config. Raises ConfigError.

    `lenient`: never raise; every problem is listed in the Config's `problems`, and what
    it concerns is left out (an unknown section or key) or given its default (a bad or
    missing value; None where the key has no default). For the dialplan hook, which must
    spool a call's event even while an admin is mid-edit.
    """
    problems = [] if lenient else None

    problem = _reporter(path, problems)
    raw = parse_ini(text, path, problems)
    header_lines = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            header_lines.setdefault(stripped[1:-1].strip().lower(), number)
    sections = {}
    for name in raw:
        if name not in SCHEMA:
            problem(header_lines.get(name, 0),
                    "unknown section [%s] (known: %s)" % (name, ", ".join(SCHEMA)))
    pools = {}
    for name, keys in SCHEMA.items():
        given = raw.get(name, {})
        values = {}
        for key, (value, line) in given.items():
            if key in keys:
                continue
            if name == "ani" and len(key) == 2:
                try:
                    region = _region(key)
                    pools[region] = _phone_pool(value)
                except ValueError as error:
                    problem(line, "[ani] %s: %s" % (key, error))
                continue
            problem(line, "unknown key %r in [%s] (known: %s%s)"
                    % (key, name, ", ".join(keys),
                       ", or a two-letter region such as DE" if name == "ani" else ""))
        for key, (check, default) in keys.items():
            if key in given:
                value, line = given[key]
            elif default is None:
                problem(header_lines.get(name, 0), "[%s] %s is required" % (name, key))
                values[key] = None
                continue
            else:
                value, line = default, 0
            try:
                values[key] = check(value)
            except ValueError as error:
                problem(line, "[%s] %s %s" % (name, key, error))
                values[key] = None if default is None else check(default)
        if name == "ani":
            values["pools"] = pools
        sections[name] = _Section(**values)
    lines = {(name, key): line for name, keys in raw.items()
             for key, (_value, line) in keys.items()}
    config = Config(path, sections, lines)
    config.problems = tuple(problems or ())
    return config


def read_raw(path):
    """The file split by `parse_ini`, without validation: what a reader needs of a
    config that does not validate (an admin mid-edit). Raises ConfigError when the file
    cannot be read or parsed at all."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_ini(handle.read(), path)
    except FileNotFoundError:
        raise ConfigError(path, 0, "config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, 0, "cannot read config file: %s" % error) from None


def raw_value(raw, section, key):
    """The text of `[section] key` in `raw` (from parse_ini), else its default ("" for a
    required key or an [ani] region without a pool).

    >>> raw_value(parse_ini("[ami]\\nport = 5039\\n"), "ami", "port")
    '5039'
    >>> raw_value({}, "state", "dir")
    '/var/lib/callexchange'
    """
    given = raw.get(section, {}).get(key)
    if given:
        return given[0]
    return SCHEMA.get(section, {}).get(key, (None, ""))[1] or ""


def config_path(environ=None):
    """The config file in use: $CALLEXCHANGE_CONFIG, else /etc/callexchange/callexchange.ini."""
    environ = os.environ if environ is None else environ
    return environ.get("CALLEXCHANGE_CONFIG") or DEFAULT_PATH


def load_config(path=None, lenient=False):
    """Read and validate the config file. Raises ConfigError (missing file included).

    `lenient` (the dialplan hook): a file that can be read gives a Config whatever it
    holds, its `problems` listing what is wrong (see `config_from_text`); only a file that
    cannot be read at all raises."""
    path = path or config_path()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(path, 0, "config file not found (set CALLEXCHANGE_CONFIG or "
                                   "create %s)" % DEFAULT_PATH) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, 0, "cannot read config file: %s" % error) from None
    return config_from_text(text, path, lenient)
