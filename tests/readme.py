"""The README taken apart for its tests: fenced blocks, shell commands, headings, tables.

Used by ``tests/unit/test_readme.py`` (everything checked against the code without
running it) and ``tests/deploy/test_readme.py`` (the commands that can run here, run as
written). Line numbers are the README's, 1-based, so a failure points at the line to fix.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()
LINES = TEXT.splitlines()
#: Shell operators that separate simple commands (``shlex`` with punctuation_chars).
OPERATORS = frozenset({"|", "||", "&&", ";", "(", ")", "&"})
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, text and the line its first text line is on."""

    lang: str
    text: str
    line: int


@dataclass(frozen=True)
class Command:
    """One shell command line of the README (continuations joined, comment dropped)."""

    text: str
    line: int

    def simple(self) -> list[list[str]]:
        """Its simple commands (split at pipes, ``&&``, ``;``, subshell parentheses)."""
        lexer = shlex.shlex(self.text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        out: list[list[str]] = [[]]
        for word in lexer:
            if word in OPERATORS:
                out.append([])
            else:
                out[-1].append(word)
        return [words for words in out if words]


def blocks() -> list[Block]:
    """Every fenced block of the README, in order."""
    out: list[Block] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(LINES, 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number + 1, []
            else:
                out.append(Block(lang, "\n".join(body) + "\n", start))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, "README.md ends inside a fenced block"
    return out


def prose() -> str:
    """The README without its fenced blocks (their lines blanked, so line numbers hold)."""
    inside = False
    out: list[str] = []
    for line in LINES:
        if line.startswith("```"):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def commands() -> list[Command]:
    """Every command of the ``sh`` blocks, and ``$ ``-prompted lines of plain blocks."""
    out: list[Command] = []
    for block in blocks():
        pending, first = "", 0
        for offset, raw in enumerate(block.text.splitlines()):
            number = block.line + offset
            line = raw
            if block.lang != "sh":
                if block.lang or not line.startswith("$ "):
                    continue
                line = line[2:]
            if not pending:
                first = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if text and not text.startswith("#"):
                out.append(Command(text, first))
    return out


def split_assignments(words: list[str]) -> tuple[list[str], list[str]]:
    """``VAR=value … program args`` → (the variable names, the program and its args)."""
    names: list[str] = []
    index = 0
    while index < len(words) and (match := ASSIGNMENT.match(words[index])):
        names.append(match.group(1))
        index += 1
    return names, words[index:]


def headings(level: int) -> list[tuple[str, int]]:
    """Headings of exactly ``level`` outside fenced blocks: (title, line)."""
    marker = "#" * level + " "
    return [
        (line[len(marker) :].strip(), number)
        for number, line in enumerate(prose().splitlines(), 1)
        if line.startswith(marker)
    ]


def anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def table(header: str) -> list[list[str]]:
    """Rows (cells stripped) of the table whose header line is exactly ``header``."""
    start = LINES.index(header)
    rows: list[list[str]] = []
    for line in LINES[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        rows.append([cell.strip() for cell in cells])
    return rows


def line_of(fragment: str) -> int:
    """The first README line containing ``fragment`` (0 if none)."""
    return next((n for n, line in enumerate(LINES, 1) if fragment in line), 0)
