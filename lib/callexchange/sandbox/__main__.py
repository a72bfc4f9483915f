"""`python -m callexchange.sandbox`: the sandbox PBX in the foreground (as `callexchange sandbox`)."""
import sys

from callexchange.sandbox.server import main

sys.exit(main())
