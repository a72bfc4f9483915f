"""Run the WSGI app as a CGI/1.1 script (RFC 3875): what the cgi-bin shims call.

A minimal adapter instead of wsgiref.handlers.CGIHandler: a CGI process is started for
every request, so it imports nothing it does not need, and it answers a JSON 500 even if
the app itself cannot be imported.

The shims run `python3 -S` (their #! line): no `site` module, whose start-up work (the
venv's .pth files, Debian's sitecustomize) costs each request ~2 ms. `main()` then puts
the venv's site-packages on sys.path itself, serves the request, and leaves with
os._exit: tearing the interpreter down (every module, every object) would cost another
~4 ms for a process that has nothing left to do.
"""

import os
import sys


def main():
    """What a shim calls: the venv's packages on sys.path, one request, a quick exit."""
    add_site_packages()
    run()
    sys.stderr.flush()
    os._exit(0)


def add_site_packages():
    """Under `python3 -S`, the site-packages of the venv the interpreter belongs to, as
    `site` would add them (without running .pth files: the gateway needs none); outside
    a venv, `site` itself (system-wide packages). Nothing to do without -S."""
    if not sys.flags.no_site:
        return
    venv = os.path.dirname(os.path.dirname(sys.executable))
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        import site
        site.main()
        return
    version = "python%d.%d" % sys.version_info[:2]
    for libdir in dict.fromkeys((sys.platlibdir, "lib")):
        path = os.path.join(venv, libdir, version, "site-packages")
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)


def run(app=None):
    """Serve one request from os.environ / stdin to stdout."""
    environ = dict(os.environ)
    # Headers as PEP 3333 has them: their bytes as Latin-1 (os.environ decoded them
    # with the locale's codec), so that both modes read a header's UTF-8 alike.
    for name, value in environ.items():
        if name.startswith("HTTP_") and not value.isascii():
            environ[name] = value.encode(sys.getfilesystemencoding(),
                                         "surrogateescape").decode("latin-1")
    environ.setdefault("PATH_INFO", "")
    environ.setdefault("SCRIPT_NAME", "")
    environ.setdefault("REQUEST_METHOD", "GET")
    environ.setdefault("SERVER_NAME", "localhost")
    environ.setdefault("SERVER_PORT", "80")
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.0")
    environ.update({
        "wsgi.input": sys.stdin.buffer,
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": True,
        "wsgi.url_scheme": "https" if environ.get("HTTPS", "off").lower() in ("on", "1") else "http",
    })
    out = sys.stdout.buffer
    state = {}

    def start_response(status, headers, exc_info=None):
        state["head"] = "Status: %s\r\n%s\r\n" % (
            status, "".join("%s: %s\r\n" % pair for pair in headers))
        return out.write

    try:
        if app is None:
            from callexchange.http.app import create_app
            app = create_app()
        chunks = app(environ, start_response)
        body = b"".join(chunks)
    except Exception:
        import traceback
        sys.stderr.write("callexchange: CGI failure\n" + traceback.format_exc())
        state["head"] = ("Status: 500 Internal Server Error\r\n"
                         "Content-Type: application/json; charset=utf-8\r\n\r\n")
        body = (b'{"status": "500 Internal Server Error", "icon": "error", '
                b'"error": "Internal error; it has been logged"}')
    if environ.get("CONTENT_LENGTH") and not sys.stdin.isatty():
        _drain(sys.stdin.buffer)
    out.write(state["head"].encode("latin-1") + body)
    out.flush()


def _drain(stream, limit=16 * 1024 * 1024):
    """Read what the app left unread (a refused 413 body, say): a CGI that exits with the
    web server still writing its input makes the server drop our reply."""
    try:
        while limit > 0:
            chunk = stream.read(min(65536, limit))
            if not chunk:
                return
            limit -= len(chunk)
    except (OSError, ValueError):
        pass
