"""Where the project's parts are, for tests in any folder under tests/."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIB = os.path.join(str(REPO), "lib")
