"""Typed field values of a request, shared by both endpoints: pure functions over dicts.

Names are matched after trimming white space and ignoring case, because the legacy
document's own samples send `" extension "` and `Msg`.
"""

import json

from callexchange.errors import ApiError


_CONTROL = ("\r", "\n", "\0")


def normalize_names(params):
    """Trim and lower-case parameter names; a name given twice is an error.

    >>> normalize_names({" Extension ": "2001", "Msg": "hi"})
    {'extension': '2001', 'msg': 'hi'}
    """
    normalized = {}
    for name, value in params.items():
        key = str(name).strip().lower()
        if key in normalized:
            raise ApiError(400, "Parameter %r is given more than once" % key, field=key)
        normalized[key] = value
    return normalized


def is_blank(value):
    """An absent field: None, or a string of white space only.

    >>> is_blank(None), is_blank("  "), is_blank(0)
    (True, True, False)
    """
    return value is None or (isinstance(value, str) and not value.strip())


def check_no_control(name, value):
    """Refuse CR, LF and NUL: such a value could inject an AMI header or dialplan; and
    what is no text at all (a lone UTF-16 surrogate, JSON's "\\ud800", or the bytes of a
    header that is not UTF-8 as a CGI's environment holds them), which cannot be
    encoded to reach Asterisk, a file or a digest."""
    if any(c in value for c in _CONTROL):
        raise ApiError(400, "Field %r must not contain CR, LF or NUL characters" % name,
                       field=name)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "Field %r is not valid text (a lone surrogate or bytes "
                                "that are not UTF-8)" % name, field=name) from None
    return value


def text_field(params, name, max_chars=None):
    """A string field (JSON strings and numbers accepted); None when absent or blank."""
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise ApiError(400, "Field %r must be a string" % name, field=name)
    if isinstance(value, float):
        if not value.is_integer():
            raise ApiError(400, "Field %r must be a string or a whole number" % name, field=name)
        value = int(value)
    value = str(value)
    check_no_control(name, value)
    value = value.strip()
    if not value:
        return None
    if max_chars is not None and len(value) > max_chars:
        raise ApiError(400, "Field %r is longer than %d characters" % (name, max_chars),
                       field=name)
    return value


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def bool_field(params, name, default=False):
    """JSON true/false, or true/false, 1/0, yes/no, on/off in any case."""
    value = params.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        check_no_control(name, value)
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ApiError(400, "Field %r must be a boolean (true/false, 1/0, yes/no, on/off), "
                        "got %s" % (name, json.dumps(value)), field=name)


def number_field(params, name, default, low, high):
    """A JSON number or numeric string within [low, high]."""
    value = params.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        raise ApiError(400, "Field %r must be a number" % name, field=name)
    if isinstance(value, str):
        check_no_control(name, value)
        try:
            value = float(value.strip())
        except ValueError:
            raise ApiError(400, "Field %r must be a number, got %s"
                           % (name, json.dumps(value)), field=name) from None
    if not isinstance(value, (int, float)) or value != value:
        raise ApiError(400, "Field %r must be a number" % name, field=name)
    if not low <= value <= high:
        raise ApiError(400, "Field %r must be between %s and %s, got %s"
                       % (name, low, high, value), field=name)
    return float(value)


def header_text(name, value):
    """The text of a request header as WSGI hands it over (PEP 3333: its bytes as
    Latin-1), read as UTF-8; None stays None. Bytes that are not UTF-8 (`\\xff\\xfe`)
    are a 400 naming the header, in CGI and mod_wsgi alike.

    >>> header_text("api-key", "cl\u00c3\u00a9")     # the bytes of "clé" in UTF-8
    'clé'
    """
    if value is None:
        return None
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value        # a server that decoded it already (no PEP 3333 string)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "Header %r is not valid UTF-8 text" % name, field=name) from None


def api_key_from(params, header_value):
    """The api-key: the header, else a body field `api_key` / `api-key`."""
    if header_value:
        return header_value.strip()
    for name in ("api-key", "api_key"):
        value = params.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
