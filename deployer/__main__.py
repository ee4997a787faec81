"""`python -m deployer deploy ...` / `python -m deployer dev DIR`: the deployer standalone."""

import sys

from deployer.cli import main

sys.exit(main(prog="python -m deployer"))
