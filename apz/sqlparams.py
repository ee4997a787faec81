"""Named parameters (`:name`) in the statements of SQL endpoints, rewritten for a driver.

Part of the package format: a `sql` endpoint's statements name their parameters `:name`
(letters, digits, `_`; not starting with a digit). :func:`parse` finds them the way the
database's own tokenizer would, skipping what is not SQL code: string literals (`'...'`,
with `''`, and PostgreSQL's `E'...'` with backslash escapes), quoted identifiers (`"..."`,
`` `...` ``), comments (`-- ...`, nested `/* ... */`), PostgreSQL dollar quotes
(`$$...$$`, `$tag$...$tag$`) and `::` casts. :meth:`Statement.render` then writes each
parameter as the driver's numbered placeholder (`$1` for PostgreSQL, `?1` for SQLite, the
same number for a name used twice), and :meth:`Statement.args` lists the values in that
order: values are always bound by the driver, never formatted into the SQL text.

The manifest's reader parses every statement once (:class:`apz.specs.SqlSpec` holds the
:class:`Statement` values); the compiler checks them against the bundled SQLite database
with it, and the node's SQL worker (:mod:`node.worker.sql`) renders them for its driver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$]")


class SqlTextError(ValueError):
    """A statement the scanner cannot read (an unterminated literal or comment)."""


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str  # the statement as written
    parts: tuple[str, ...]  # the text between parameters: len(parts) == len(uses) + 1
    uses: tuple[str, ...]  # each parameter occurrence, in order
    names: tuple[str, ...]  # distinct parameter names, in order of first use

    def render(self, placeholder: Callable[[int], str]) -> str:
        """The statement with each `:name` replaced by `placeholder(n)` (n from 1)."""
        index = {name: i + 1 for i, name in enumerate(self.names)}
        out = [self.parts[0]]
        for use, part in zip(self.uses, self.parts[1:], strict=True):
            out.append(placeholder(index[use]))
            out.append(part)
        return "".join(out)

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The values to bind, in placeholder order."""
        return [values[name] for name in self.names]


def postgres(n: int) -> str:
    return f"${n}"


def sqlite(n: int) -> str:
    return f"?{n}"


def parse(sql: str) -> Statement:
    """Finds the `:name` parameters of one statement. Raises SqlTextError on an
    unterminated literal, quoted identifier or comment."""
    parts: list[str] = []
    uses: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            backslash = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _IDENT_CHAR.match(sql[i - 2]))
            i = _skip_quoted(sql, i, "'", backslash, "string literal")
        elif c == '"' or c == "`":
            i = _skip_quoted(sql, i, c, False, "quoted identifier")
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif c == "$" and (i == 0 or not _IDENT_CHAR.match(sql[i - 1])):
            m = _DOLLAR_TAG.match(sql, i)
            if m is None:
                i += 1
                continue
            end = sql.find(m.group(0), m.end())
            if end < 0:
                raise SqlTextError(f"unterminated dollar-quoted string {m.group(0)} at character {i + 1}")
            i = end + len(m.group(0))
        elif c == ":":
            if sql.startswith("::", i):
                i += 2
                continue
            m = _NAME.match(sql, i + 1)
            if m is None:
                i += 1
                continue
            parts.append(sql[start:i])
            uses.append(m.group(0))
            start = i = m.end()
        else:
            i += 1
    parts.append(sql[start:])
    return Statement(sql, tuple(parts), tuple(uses), tuple(dict.fromkeys(uses)))


def _skip_quoted(sql: str, i: int, quote: str, backslash: bool, what: str) -> int:
    """The index after the closing quote of the literal opening at `i`."""
    j = i + 1
    n = len(sql)
    while j < n:
        c = sql[j]
        if backslash and c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and sql[j + 1] == quote:  # a doubled quote stands for itself
                j += 2
                continue
            return j + 1
        j += 1
    raise SqlTextError(f"unterminated {what} at character {i + 1}")


def _skip_block_comment(sql: str, i: int) -> int:
    depth, j = 1, i + 2  # PostgreSQL nests block comments; SQLite never sees a nested one in valid SQL
    while depth:
        nxt_open, nxt_close = sql.find("/*", j), sql.find("*/", j)
        if nxt_close < 0:
            raise SqlTextError(f"unterminated /* comment at character {i + 1}")
        if 0 <= nxt_open < nxt_close:
            depth, j = depth + 1, nxt_open + 2
        else:
            depth, j = depth - 1, nxt_close + 2
    return j
