"""multipart/form-data bodies (RFC 7578), fields only: what PHP's curl sends for
`CURLOPT_POSTFIELDS => array(...)` and Python's requests for `files={name: (None, value)}`.

Read by the standard library's email parser with its HTTP policy, not by hand: the
boundary, the part headers and their quoting are MIME's. This module is imported only
for a multipart body (http/body.py), since the email package costs a CGI process ~20 ms
to import. It returns each field's raw bytes with the charset its part declares; what
they mean (their charset, a name given twice) is body.py's, as for every other form.

>>> body = (b'--XyZ\\r\\nContent-Disposition: form-data; name="extension"\\r\\n\\r\\n2001\\r\\n'
...         b'--XyZ\\r\\nContent-Disposition: form-data; name="msg"\\r\\n'
...         b'Content-Type: text/plain; charset=ISO-8859-1\\r\\n\\r\\ncaf\\xe9\\r\\n--XyZ--\\r\\n')
>>> fields(body, "multipart/form-data; boundary=XyZ")
[(b'extension', b'2001', None), (b'msg', b'caf\\xe9', 'iso-8859-1')]
"""

import email.parser
import email.policy
import email.utils

from callexchange.errors import ApiError

# More parts than any form of ours has fields: a body of thousands of tiny parts is not
# a CRM's request, and would make the parser work for nothing.
MAX_PARTS = 100


def fields(body, content_type):
    """[(name, value, charset or None)] of a multipart/form-data `body` (bytes, at most
    MAX_BODY), in order; names and values are bytes. A 400 for a Content-Type without a
    boundary, a body that does not follow it, a part that is not a named form-data
    field, and a file (a part with a filename, or a nested multipart)."""
    boundary = _parse(b"", content_type).get_boundary()
    if boundary is None:
        raise ApiError(400, "multipart/form-data needs a boundary parameter in its "
                            "Content-Type")
    # Counted before parsing: 64 KiB of empty parts would keep the parser busy for seconds.
    if body.count(b"--" + boundary.encode("latin-1", "replace")) > MAX_PARTS + 1:
        raise ApiError(400, "multipart/form-data body has more than %d parts" % MAX_PARTS)
    message = _parse(body, content_type)
    if not message.is_multipart() or message.defects:
        raise _malformed(message.defects)
    parts = message.get_payload()
    found = []
    for number, part in enumerate(parts, 1):
        if part.defects:
            raise _malformed(part.defects)
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, tuple):  # RFC 2231: name*=utf-8''...
            name = email.utils.collapse_rfc2231_value(name)
        if part.get_content_disposition() != "form-data" or not isinstance(name, str):
            raise ApiError(400, "Part %d of the multipart/form-data body is not a named "
                                "field (Content-Disposition: form-data; name=\"...\")"
                           % number)
        if part.get_filename() is not None or part.is_multipart():
            raise ApiError(400, "Part %r of the multipart/form-data body is a file: only "
                                "fields are accepted, there is nothing to upload" % name,
                           field=name.strip().lower())
        value = part.get_payload(decode=True)
        found.append((name.encode("utf-8", "surrogateescape"), value,
                      part.get_content_charset()))
    return found


def declared_charset(content_type):
    """The charset parameter of the multipart Content-Type itself (not RFC 7578's, but
    some clients send one), or None.

    >>> declared_charset('multipart/form-data; boundary=x; charset="windows-1252"')
    'windows-1252'
    """
    return _parse(b"", content_type).get_content_charset()


def _parse(body, content_type):
    if any(c in content_type for c in "\r\n\0"):
        raise ApiError(400, "Content-Type holds a line break")
    try:
        header = content_type.encode("latin-1")
    except UnicodeEncodeError:
        raise ApiError(400, "Content-Type is not Latin-1 text") from None
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    return parser.parsebytes(b"Content-Type: " + header + b"\r\n\r\n" + body)


def _malformed(defects):
    what = "; ".join((defect.__doc__ or type(defect).__name__).strip().split("\n")[0]
                     for defect in defects) or "no parts"
    return ApiError(400, "Malformed multipart/form-data body: %s" % what)
