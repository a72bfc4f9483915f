"""`python -m callexchange.sandbox`: the sandbox PBX in the foreground (as `callexchange sandbox`)."""
import sys

from callexchange.cli.sandbox import main

sys.exit(main())
