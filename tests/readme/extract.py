"""The commands the README shows, read from its fenced blocks.

A shell block (info string empty, `bash` or `sh`) holds commands, one per logical line
(`\\` continues a line); lines starting with `#` are what a command prints, and a
` # ...` tail is a comment. A `python` block is one snippet. Blocks of other languages
(`yaml`, `json`) are files, not commands. Only the sections a user runs commands from are
read: the others show templates and file layouts. A shell block whose first line is
`# REASON: not run by the tests` shows commands the tests cannot run (`not_run`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = (
    "Quick start",
    "gRPC API",
    "Deploying",
    "CLI",
    "Load testing and benchmarks",
    "Open Inference Protocol (KServe V2 / Triton)",
    "Running on Kubernetes",
)
SHELL = ("", "bash", "sh")
_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_NOT_RUN = re.compile(r"^# (.+): not run by the tests$")


@dataclass(frozen=True)
class Block:
    section: str
    lang: str
    text: str

    @property
    def not_run(self) -> str:
        """Why the tests do not run this block's commands ("" if they do)."""
        first = _NOT_RUN.match(self.text.strip().split("\n", 1)[0]) if self.lang in SHELL else None
        return first.group(1) if first else ""


def blocks(readme: Path = README) -> list[Block]:
    """The fenced blocks of the `## ` sections in SECTIONS, in order."""
    out: list[Block] = []
    section, lang, body, indent = "", None, list[str](), 0
    for line in readme.read_text(encoding="utf-8").splitlines():
        fence = _FENCE.match(line)
        if lang is None:
            if line.startswith("## "):
                section = line[3:].strip()
            elif fence:
                lang, body, indent = fence.group(2), [], len(fence.group(1))
        elif fence and len(fence.group(1)) == indent and not fence.group(2):
            if section in SECTIONS:
                out.append(Block(section, lang, "\n".join(body)))
            lang = None
        else:
            body.append(line[indent:] if line[:indent].isspace() else line)
    assert lang is None, f"{readme}: a fenced block is not closed"
    return out


def commands(readme: Path = README) -> list[str]:
    """Every command of those sections: shell commands one per logical line, with single
    spaces where lines were continued; python snippets whole."""
    out: list[str] = []
    for b in blocks(readme):
        if b.lang == "python":
            out.append(b.text.strip())
        elif b.lang in SHELL:
            out += _shell_commands(b.text)
    return out


def not_run(readme: Path = README) -> dict[str, str]:
    """The commands of the blocks marked `# REASON: not run by the tests`: command -> REASON."""
    return {c: b.not_run for b in blocks(readme) if b.not_run for c in _shell_commands(b.text)}


def _shell_commands(text: str) -> list[str]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if _open_quote(pending):  # a newline inside a quoted argument belongs to it
            pending += "\n" + raw
        else:
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue  # output shown under a command, or a blank line
            pending += line
        if pending.endswith("\\") and not _open_quote(pending):
            pending = pending[:-1].rstrip() + " "
        elif not _open_quote(pending):
            logical.append(pending)
            pending = ""
    assert not pending.strip(), f"an unfinished command in the README: {pending!r}"
    return [_strip_comment(c) for c in logical]


def _open_quote(text: str) -> str:
    """The quote character left open at the end of `text` ("" if none)."""
    return _scan(text)[0]


def _strip_comment(command: str) -> str:
    """The command without a trailing ` # comment` (a `#` inside quotes is kept)."""
    return command[: _scan(command)[1]].rstrip()


def _scan(text: str) -> tuple[str, int]:
    """(the quote open at the end, where a ` # comment` starts or len(text))."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and i > 0 and text[i - 1] == " ":
            return "", i
    return quote, len(text)
