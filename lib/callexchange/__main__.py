"""`python -m callexchange`: the admin tool (a one-line hint, not a traceback, when this
Python lacks the requirements)."""
import sys

from callexchange.cli import runtime

runtime.exit_unless_runnable()

from callexchange.cli import main  # noqa: E402

sys.exit(main())
