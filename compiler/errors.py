"""The compiler's one user-facing error.

Everything a user can get wrong (a missing file, a YAML typo, an estimator that cannot be
converted, a parity failure) is raised as :class:`CompileError` with a single line that says
what and where; the CLI prints that line to stderr and exits with status 2. Anything else
is a bug in the compiler and keeps its traceback.
"""

from __future__ import annotations


class CompileError(Exception):
    """A user error, with a one-line message naming the file, key or row at fault."""

    def __init__(self, message: str) -> None:
        # One line, always: messages quote user data that may hold newlines.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)
