#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages (nothing yet for issue 2).
set -euo pipefail
exit 0
