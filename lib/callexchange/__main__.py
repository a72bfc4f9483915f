"""`python -m callexchange`: the admin tool."""
import sys

from callexchange.cli import main

sys.exit(main())
