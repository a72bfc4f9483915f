#!/usr/bin/env -S python3 -S
"""CGI shim for the legacy URL /recorded/v1/find_phone_files.pl: the WSGI app does the work."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, "lib"))

from callexchange.http.cgi import main  # noqa: E402

main()
