"""The application of the persistent mode (mod_wsgi daemon processes), which follows edits.

A CGI process reads the config afresh on every request; a daemon process lives for
hours. So that an admin's edit of callexchange.ini (or of the keys file) takes effect
without an Apache reload, each request looks at both files (one `stat` each, about 5 µs
together) and, when either changed (inode, size, mtime or ctime), builds a new
application from the config before it answers. A config that does not load gives an
application that answers the usual JSON 500 until it is fixed; requests already running
finish on the application they started with.

    application = PersistentApp("/etc/callexchange/callexchange.ini")
"""

import os
import threading

from callexchange.http.app import create_app


def _signature(path, stat):
    """What identifies a version of the file at `path`: None when it is missing."""
    if not path:
        return None
    try:
        info = stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class PersistentApp:
    """A WSGI callable that rebuilds `factory(config_path)` when the config file or the
    keys file it names has changed since the last build. Thread-safe: one rebuild at a
    time, and every request runs on one whole application. `builds` counts them."""

    def __init__(self, config_path, factory=create_app, stat=os.stat):
        self.config_path = config_path
        self.factory = factory
        self.stat = stat
        self._lock = threading.Lock()
        self._app = None
        self._seen = None
        self.builds = 0

    def _signatures(self, app):
        config = getattr(app, "config", None)
        keys_file = config.auth.keys_file if config is not None else None
        return (_signature(self.config_path, self.stat), _signature(keys_file, self.stat))

    def current(self):
        """The application for the files as they are now (rebuilt if they changed)."""
        app = self._app
        if app is not None and self._signatures(app) == self._seen:
            return app
        with self._lock:
            app = self._app
            if app is None or self._signatures(app) != self._seen:
                # The config's signature from before it is read: an edit landing during
                # the build is seen by the next request, never lost.
                config_seen = _signature(self.config_path, self.stat)
                app = self.factory(self.config_path)
                self._seen = (config_seen, self._signatures(app)[1])
                self._app = app
                self.builds += 1
        return app

    def __call__(self, environ, start_response):
        return self.current()(environ, start_response)
