"""Reading what a client sent: the body in any of its forms.

Pure functions over bytes. A body may be a JSON object (whatever the Content-Type says),
a JSON-RPC 2.0 request or batch, a form, or for GET the query string.
"""

import json

from callexchange import percent
from callexchange.errors import ApiError


MAX_BODY = 64 * 1024


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
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    try:
        return percent.decode_bytes(text).decode("utf-8")
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


def read_body(environ):
    """The request body, at most MAX_BODY bytes (413 beyond)."""
    length_text = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if length > MAX_BODY:
            raise ApiError(413, "Body is larger than %d bytes" % MAX_BODY)
        return stream.read(length) if length > 0 else b""
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() != "chunked":
        return b""
    data = stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ApiError(413, "Body is larger than %d bytes" % MAX_BODY)
    return data
