"""mod_wsgi entry point: the WSGI application of the CGI shims, kept loaded.

apache/callexchange-wsgi.conf.in maps the legacy URLs here and passes the config path as
CALLEXCHANGE_CONFIG in each request's environ (SetEnv), which os.environ never sees under
mod_wsgi; so the application is made on the first request, one per config path. It
follows edits of the config and the keys file without an Apache reload
(callexchange.http.persistent). Calls reach Asterisk over one long-lived AMI connection
of this daemon process (pbx.persistent), which follows `[ami]` edits too and is logged
off when the process exits. The daemon imports this file when it starts
(WSGIImportScript), so phonenumbers' metadata is loaded before the first call.
"""
import atexit
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "lib"))

from callexchange.calls import numbers  # noqa: E402
from callexchange.http.app import create_app  # noqa: E402
from callexchange.http.persistent import PersistentApp  # noqa: E402
from callexchange.pbx.persistent import PersistentAmi  # noqa: E402

# Imported at the daemon's start (WSGIImportScript): phonenumbers' metadata is loaded
# now, so that no call's deadline pays for it.
numbers.known_region("US")

_apps = {}
_lock = threading.Lock()
_ami = PersistentAmi()
atexit.register(_ami.close)


def _create_app(config_path):
    return create_app(config_path, ami_client=_ami)


def application(environ, start_response):
    config_path = environ.get("CALLEXCHANGE_CONFIG") or None
    app = _apps.get(config_path)
    if app is None:
        with _lock:
            app = _apps.setdefault(config_path, PersistentApp(config_path, _create_app))
    return app(environ, start_response)
