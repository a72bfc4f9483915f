"""Reading what a client sent: the body in any of its forms, and typed field values.

Pure functions over bytes and dicts, shared by both endpoints. A body may be a JSON
object (whatever the Content-Type says), a JSON-RPC 2.0 request or batch, a form, or for
GET the query string. Names are matched after trimming white space and ignoring case,
because the legacy document's own samples send `" extension "` and `Msg`.
"""

import json

from .errors import ApiError

MAX_BODY = 64 * 1024
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


class FormParams(dict):
    """Parameters from a form or a query string: never a JSON-RPC request, whatever their
    names (SPEC §3.1: a body with "jsonrpc": "2.0" is one)."""


def parse_query(text):
    """Decode `a=1&b=2` (application/x-www-form-urlencoded) into a dict; a name given twice
    is a 400.

    Our own few lines rather than urllib.parse, which costs a CGI ~2 ms to import. `+` is a
    space, %XX a byte, the result UTF-8; a malformed escape is kept as written, as
    urllib.parse does.

    >>> parse_query("phone=%2B49+30&limit=5&flag")
    {'phone': '+49 30', 'limit': '5', 'flag': ''}
    """
    params = FormParams()
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = _unquote_plus(name)
        if name in params:
            raise ApiError(400, "Parameter %r is given more than once" % name, field=name)
        params[name] = _unquote_plus(value)
    return params


def _unquote_plus(text):
    if "%" not in text:
        return text.replace("+", " ")
    raw = bytearray()
    pieces = text.replace("+", " ").split("%")
    raw += pieces[0].encode("utf-8")
    for piece in pieces[1:]:
        escape = piece[:2]
        if len(escape) == 2 and all(c in "0123456789abcdefABCDEF" for c in escape):
            raw.append(int(escape, 16))
            raw += piece[2:].encode("utf-8")
        else:
            raw += b"%" + piece.encode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "Form data is not valid UTF-8") from None


def parse_body(body, content_type):
    """The decoded body: a dict (object or form), a list (JSON-RPC batch), or {} if empty.

    JSON is recognised by its first character or by the Content-Type; anything else is
    read as a form. Malformed JSON is a 400 that says where it broke.
    """
    text_start = body.lstrip()[:1]
    is_json = text_start in (b"{", b"[") or "json" in content_type.lower()
    if not body.strip():
        return {}
    if content_type.lower().startswith("multipart/"):
        raise ApiError(415, "Body type %s is not supported: send JSON or "
                            "application/x-www-form-urlencoded" % content_type.split(";")[0])
    if not is_json:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "Body is not valid UTF-8") from None
        if "=" not in text:
            raise ApiError(400, "Body must be a JSON object or form data (name=value&...)")
        return parse_query(text.strip())
    jsonrpc = b'"jsonrpc"' in body
    try:
        payload = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_names)
    except UnicodeDecodeError:
        raise ApiError(400, "Body is not valid UTF-8") from None
    except RecursionError:
        raise ApiError(400, "Malformed JSON: nested too deeply",
                       jsonrpc_parse_error=jsonrpc) from None
    except ValueError as error:
        raise ApiError(400, "Malformed JSON: %s" % error, jsonrpc_parse_error=jsonrpc) from None
    if not isinstance(payload, (dict, list)):
        raise ApiError(400, "Body must be a JSON object, not %s" % type(payload).__name__)
    return payload


def _unique_names(pairs):
    """A JSON object whose names are unique: {"extension": 1, "extension": 2} says two
    things, and the first would otherwise be dropped without a word."""
    obj = {}
    for name, value in pairs:
        if name in obj:
            raise ApiError(400, "Parameter %r is given more than once" % name, field=name)
        obj[name] = value
    return obj


def check_no_control(name, value):
    """Refuse CR, LF and NUL: such a value could inject an AMI header or dialplan."""
    if any(c in value for c in _CONTROL):
        raise ApiError(400, "Field %r must not contain CR, LF or NUL characters" % name,
                       field=name)
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


def api_key_from(params, header_value):
    """The api-key: the header, else a body field `api_key` / `api-key`."""
    if header_value:
        return header_value.strip()
    for name in ("api-key", "api_key"):
        value = params.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
