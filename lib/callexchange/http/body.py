"""Reading what a client sent: the body in any of its forms.

Pure functions over bytes. A body may be a JSON object (whatever the Content-Type says),
a JSON-RPC 2.0 request or batch, a form (urlencoded, in the charset it declares, or
multipart/form-data: http/multipart.py), or for GET the query string.
"""

import codecs
import json

from callexchange import percent
from callexchange.errors import ApiError


MAX_BODY = 64 * 1024
# Printable ASCII and two escapes: a form's charset must read them as themselves, or `&`,
# `=` and `%` would not split and decode it (UTF-16, EBCDIC, unicode_escape...).
_ASCII_PROBE = "".join(map(chr, range(32, 127))) + "\\x41\\u0041"
# What browsers read as windows-1252 (the WHATWG Encoding Standard makes these labels one):
# a CRM whose page says ISO-8859-1 sends a euro sign as 0x80.
_WINDOWS_1252 = ("iso8859-1", "ascii", "cp1252")
# windows-1252 as browsers decode it: Latin-1 but for 0x80-0x9F; the five bytes Python's
# cp1252 leaves undefined keep their Latin-1 meaning, as there. Made on first use (the
# codec is one more import for every request otherwise).
_CP1252_OVER_LATIN1 = {}


class FormParams(dict):
    """Parameters from a form or a query string: never a JSON-RPC request, whatever their
    names (a body with "jsonrpc": "2.0" is one only when it is JSON)."""


def parse_query(text):
    """Decode `a=1&b=2` (application/x-www-form-urlencoded) into a dict; a name given twice
    is a 400.

    Our own few lines rather than urllib.parse, which costs a CGI ~2 ms to import. `+` is a
    space, %XX a byte, the result UTF-8; a malformed escape is kept as written, as
    urllib.parse does.

    >>> parse_query("phone=%2B49+30&limit=5&flag")
    {'phone': '+49 30', 'limit': '5', 'flag': ''}
    """
    return parse_form(text.encode("utf-8"), "utf-8")


def parse_form(data, charset=None):
    """Decode an application/x-www-form-urlencoded body (bytes): `+` is a space, %XX a
    byte, and the bytes of each name and value are read in `charset` (a label, as
    declared); without one, in the charset a `_charset_` field names (HTML's convention),
    else UTF-8. A name given twice is a 400.

    >>> parse_form(b"msg=caf%E9+cr%E8me&x=%80", "ISO-8859-1")
    {'msg': 'café crème', 'x': '€'}
    >>> parse_form(b"_charset_=windows-1252&msg=%80")
    {'_charset_': 'windows-1252', 'msg': '€'}
    """
    fields = []
    for pair in data.split(b"&"):
        if pair:
            name, _, value = pair.partition(b"=")
            fields.append((_unquote_plus(name), _unquote_plus(value), None))
    return form_params(fields, charset)


def _unquote_plus(data):
    return percent.decode_bytes(data.replace(b"+", b" "))


def form_params(fields, charset=None):
    """FormParams of `fields`, [(name bytes, value bytes, charset of this field or None)]:
    each read in its own charset, else in `charset`, else in the one a `_charset_` field
    names, else UTF-8. An unknown charset is a 415, bytes it cannot read a 400."""
    if charset is None:
        declared = [value for name, value, _ in fields if name == b"_charset_"]
        charset = declared[0].decode("latin-1").strip() if declared else None
    default = "utf-8" if charset is None else form_codec(charset)
    params = FormParams()
    for name, value, own in fields:
        codec = default if own is None else form_codec(own)
        name = _decode(name, codec)
        if name in params:
            raise ApiError(400, "Parameter %r is given more than once" % name, field=name)
        params[name] = _decode(value, codec)
    return params


def form_codec(label):
    """The codec to read a form declared in charset `label` with; 415 for a charset
    Python does not know or that does not keep ASCII as ASCII.

    >>> form_codec("ISO-8859-1"), form_codec("Shift_JIS"), form_codec("UTF-8")
    ('cp1252', 'shift_jis', 'utf-8')
    """
    try:
        name = codecs.lookup(label).name
        usable = (_ASCII_PROBE.encode(name) == _ASCII_PROBE.encode("ascii") and
                  _ASCII_PROBE.encode("ascii").decode(name) == _ASCII_PROBE)
    except (LookupError, UnicodeError, ValueError):
        usable = False
    if not usable:
        raise ApiError(415, "Form charset %r is not supported: send UTF-8, or declare a "
                            "charset such as ISO-8859-1 or windows-1252" % label[:40])
    return "cp1252" if name in _WINDOWS_1252 else name


def _decode(data, codec):
    if codec == "cp1252":
        if not _CP1252_OVER_LATIN1:
            _CP1252_OVER_LATIN1.update((b, bytes([b]).decode("cp1252", "ignore") or chr(b))
                                       for b in range(0x80, 0xA0))
        return data.decode("latin-1").translate(_CP1252_OVER_LATIN1)
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        raise ApiError(400, "Form data is not valid %s" % ("UTF-8" if codec == "utf-8"
                                                            else codec)) from None


def media_type_charset(content_type):
    """The charset parameter of a Content-Type, or None.

    >>> media_type_charset('application/x-www-form-urlencoded; Charset="ISO-8859-1"')
    'ISO-8859-1'
    """
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').strip() or None
    return None


UTF8_BOM = b"\xef\xbb\xbf"


def parse_body(body, content_type):
    """The decoded body: a dict (object or form), a list (JSON-RPC batch), or {} if empty.

    JSON is recognised by its first character or by the Content-Type (and is UTF-8,
    whatever charset it declares); multipart/form-data by its Content-Type; anything else
    is read as a form, in its declared charset. Malformed JSON is a 400 that says where
    it broke.
    """
    if body.startswith(UTF8_BOM):
        # .NET's and Windows tools' UTF-8 writers put a byte-order mark first; it says
        # "UTF-8" and nothing more.
        body = body[len(UTF8_BOM):]
    if not body.strip():
        return {}
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        # Imported here: the email package it uses costs a CGI ~20 ms, which only
        # multipart requests pay.
        from callexchange.http import multipart
        return form_params(multipart.fields(body, content_type),
                           multipart.declared_charset(content_type))
    if media_type.startswith("multipart/"):
        raise ApiError(415, "Body type %s is not supported: send JSON, a form "
                            "(application/x-www-form-urlencoded) or multipart/form-data"
                       % media_type)
    is_json = body.lstrip()[:1] in (b"{", b"[") or "json" in media_type
    if not is_json:
        if b"=" not in body:
            raise ApiError(400, "Body must be a JSON object or form data (name=value&...)")
        return parse_form(body.strip(), media_type_charset(content_type))
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
