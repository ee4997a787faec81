"""`python -m compiler compile DIR [-o FILE]`: the compiler without the rest of apinode."""

import sys

from compiler.cli import main

sys.exit(main())
