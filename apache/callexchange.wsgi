"""mod_wsgi entry point: the WSGI application of the CGI shims, kept loaded.

apache/callexchange-wsgi.conf.in maps both legacy URLs here and passes the config path as
CALLEXCHANGE_CONFIG in each request's environ (SetEnv), which os.environ never sees under
mod_wsgi; so the application is made on the first request, once per config path.
"""
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "lib"))

from callexchange.http.app import create_app  # noqa: E402

_apps = {}
_lock = threading.Lock()


def application(environ, start_response):
    config_path = environ.get("CALLEXCHANGE_CONFIG") or None
    app = _apps.get(config_path)
    if app is None:
        with _lock:
            app = _apps.get(config_path)
            if app is None:
                app = _apps[config_path] = create_app(config_path)
    return app(environ, start_response)
