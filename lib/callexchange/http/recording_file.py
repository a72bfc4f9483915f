"""GET/HEAD /wav-files/<path> when recordings are not public: check, then let Apache send.

With `[recordings] access = signed` or `key`, Apache hands /wav-files/ to this handler
(apache/callexchange.conf.in). It checks the method, the path, the token or the api-key
(before it looks at the disk, so a stranger learns nothing about which files exist), then
the file itself (every component under the root an lstat'ed real directory, the last a
regular file: no symlink is followed), and answers with an `X-Sendfile` header: mod_xsendfile
then serves the file as Apache serves static files, Range (206), HEAD and conditional
requests included, without the file passing through Python. Where the server says it has
no mod_xsendfile (no CALLEXCHANGE_XSENDFILE in the environ), the file is sent whole.

Errors are JSON in the legacy shape, with a `message`: 400 bad path, 401 missing or
unknown api-key, 403 missing, wrong or expired token or a symlink, 404 no such file,
405 other methods.
"""

from callexchange.errors import ApiError, ServerConfigError, report, status_line
from callexchange.http.reply import Reply

PREFIX = "/wav-files/"
MESSAGE = "We fail on fetching the recording."
CONTENT_TYPES = {"wav": "audio/wav", "wav49": "audio/wav", "gsm": "audio/x-gsm",
                 "mp3": "audio/mpeg"}
_CHUNK = 256 * 1024


class FileReply(Reply):
    """A recording: no JSON body; `payload` is what to send (b"" with X-Sendfile)."""

    def __init__(self, headers, payload=b""):
        super().__init__(200, None, headers)
        self.payload = payload


def error_reply(error):
    body = {"status": status_line(error.status), "icon": "error", "error": error.error,
            "message": MESSAGE}
    if error.extra.get("error_id"):
        body["error_id"] = error.extra["error_id"]
    headers = list(error.extra.get("headers", ()))
    return Reply(error.status, body, headers)


def serve(config, config_error, environ):
    """The reply for one request under /wav-files/ (SCRIPT_NAME + PATH_INFO)."""
    try:
        return _serve(config, config_error, environ)
    except ApiError as error:
        report(error, environ["wsgi.errors"].write)
        return error_reply(error)


def _serve(config, config_error, environ):
    method = environ.get("REQUEST_METHOD", "GET").upper()
    if method not in ("GET", "HEAD"):
        raise ApiError(405, "Method %s not allowed; use GET or HEAD" % method,
                       headers=[("Allow", "GET, HEAD")])
    if config_error is not None:
        raise ServerConfigError(config_error)
    relative = recording_path(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    authorize(config, environ, relative)
    full = regular_file(config.recordings.root, relative)
    extension = relative.rsplit(".", 1)[-1].lower() if "." in relative else ""
    headers = [("Content-Type", CONTENT_TYPES.get(extension, "application/octet-stream")),
               ("X-Content-Type-Options", "nosniff"),
               # A signed URL or a key opened it: no shared cache may keep it.
               ("Cache-Control", "private")]
    if environ.get("CALLEXCHANGE_XSENDFILE"):
        return FileReply(headers + [("X-Sendfile", full)])
    data = _read_whole(full)
    return FileReply(headers + [("Content-Length", str(len(data)))], data)


def recording_path(url_path):
    """The path under the root from the decoded URL path, or ApiError 400/404.

    >>> recording_path("/wav-files/2024/07/03/out-1-2-20240703-203742-1.2.wav")
    '2024/07/03/out-1-2-20240703-203742-1.2.wav'
    >>> recording_path("/wav-files/2024/../../etc/passwd")
    Traceback (most recent call last):
    ...
    callexchange.errors.ApiError: Invalid recording path
    """
    if not url_path.startswith(PREFIX):
        raise ApiError(404, "No such recording")
    relative = url_path[len(PREFIX):]
    parts = relative.split("/")
    if not relative or relative.endswith("/"):
        raise ApiError(404, "No such recording (folders are never listed)")
    for part in parts:
        if (not part or part.startswith(".") or "\\" in part
                or any(ord(c) < 32 or ord(c) == 127 for c in part)):
            raise ApiError(400, "Invalid recording path")
    return relative


def authorize(config, environ, relative):
    """Raise ApiError unless this request may fetch `relative` under the access mode."""
    from callexchange.recordings import access
    mode = config.recordings.access
    if mode == access.PUBLIC:
        return
    from callexchange.params import header_text
    header_key = header_text("api-key", environ.get("HTTP_API_KEY"))
    if mode == access.KEY or header_key:
        # key mode needs the key; in signed mode a CRM's backend may send its key instead.
        if not header_key:
            raise ApiError(401, "Missing api-key header: recordings need the api-key")
        from callexchange import keys
        keys.authenticate(config.auth.keys_file, header_key)
        return
    import time
    token = _token_params(environ.get("QUERY_STRING", ""))
    try:
        key = access.url_key(config.state.dir, create=False)
        access.check_token(key, relative, token.get("exp"), token.get("sig"), time.time())
    except FileNotFoundError:
        # No key yet: no URL was ever signed, so this one cannot be valid.
        raise ApiError(403, "Invalid recording URL token") from None
    except access.TokenError as error:
        raise ApiError(403, str(error)) from None
    except OSError as error:
        raise ServerConfigError("cannot read the recordings URL key in [state] dir %s: %s"
                                % (config.state.dir, error.strerror or error)) from None


def _token_params(query):
    """exp and sig from the query string; a name given twice counts as invalid."""
    found = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name in ("exp", "sig"):
            found[name] = "" if name in found else value
    return found


def regular_file(root, relative):
    """The absolute path of `relative` under `root` after checking each component with
    lstat: a symlink anywhere is 403, a missing file or a folder 404."""
    import os
    import stat
    path = root.rstrip("/")
    parts = relative.split("/")
    for index, part in enumerate(parts):
        path = path + "/" + part
        try:
            info = os.lstat(path)
        except OSError:
            raise ApiError(404, "No such recording") from None
        if stat.S_ISLNK(info.st_mode):
            raise ApiError(403, "Symbolic links are never served")
        last = index == len(parts) - 1
        if not last and not stat.S_ISDIR(info.st_mode):
            raise ApiError(404, "No such recording")
        if last and not stat.S_ISREG(info.st_mode):
            raise ApiError(404, "No such recording (folders are never listed)")
    return path


def _read_whole(path):
    chunks = []
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
