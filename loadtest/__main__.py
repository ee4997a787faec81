"""``python -m loadtest ...``: the same as ``apinode loadtest ...``."""

import sys

from loadtest.cli import standalone

sys.exit(standalone())
