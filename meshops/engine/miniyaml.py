"""Plain block YAML read without PyYAML, or a refusal to read it: for the quick validation path.

Importing PyYAML costs about half the interpreter's own start-up (it builds all of its
loaders, dumpers and resolver patterns), more than the rest of ``meshops playbook validate``.
Most playbooks are plain: block mappings and sequences of words, numbers, quoted strings and
one-line lists and mappings, and plain ``>``/``|`` text. This reads exactly that and returns None for
everything else (anchors, tags, chomping indicators, multi-line plain scalars, flow mappings,
tabs, non-ASCII, anything it cannot type with certainty), so the caller falls back to PyYAML. Where it does answer, the answer
equals PyYAML's (``yaml.safe_load``, YAML 1.1 typing): tests/unit/test_miniyaml.py checks it
on the repository's YAML and on thousands of mutations of it.
"""

from __future__ import annotations

from typing import Any

MAX_BYTES = 256 * 1024
_MAX_NODES = 10_000  # far below yamlsource's bound, so both refuse nothing the other reads
_MAX_DEPTH = 16
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))
_WORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ/")
# Scalars YAML 1.1 (as PyYAML resolves them) reads as booleans or null.
_BOOLS = {"yes": True, "Yes": True, "YES": True, "true": True, "True": True, "TRUE": True, "on": True,
          "On": True, "ON": True, "no": False, "No": False, "NO": False, "false": False, "False": False,
          "FALSE": False, "off": False, "Off": False, "OFF": False}
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_DIGITS = frozenset("0123456789")
_UNITS = ("ms", "s", "m", "h", "d", "w")


class _Unsupported(Exception):
    pass


def load(text: str) -> Any:
    """The document as PyYAML's safe loader would build it, or None when this reader cannot tell."""
    if len(text) > MAX_BYTES or not set(text) <= _PRINTABLE | {"\n"}:
        return None
    raw_lines = text.split("\n")
    lines, rows = [], []
    for row, raw in enumerate(raw_lines):
        stripped = raw.strip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        lines.append((len(raw) - len(raw.lstrip(" ")), raw.lstrip(" ").rstrip(" ")))
        rows.append(row)
    if not lines or lines[0][0] != 0:
        return None
    reader = _Reader(lines, rows, raw_lines)
    try:
        value, end = reader.block(0, 0, 0)
        if end != len(lines) or not isinstance(value, dict):
            return None
    except (_Unsupported, IndexError, ValueError):
        return None
    return value


class _Reader:
    def __init__(self, lines: list[tuple[int, str]], rows: list[int], raw: list[str]) -> None:
        self.lines = lines  # (indent, content) of each line that is not blank or a comment
        self.rows = rows  # where each of those is in ``raw``
        self.raw = raw
        self.nodes = 0

    def _block_scalar(self, i: int, indent: int, style: str, depth: int) -> tuple[str, int]:
        """``key: >`` or ``key: |`` (clip chomping) over lines ``i``.. deeper than ``indent``.

        Read only in the plain shape: every content line at one indent, no blank or comment-like
        line inside, no trailing spaces. Folded joins the lines with spaces, literal with newlines.
        """
        self._count(depth)
        start = i
        while i < len(self.lines) and self.lines[i][0] > indent:
            i += 1
        if i == start or {self.lines[j][0] for j in range(start, i)} != {self.lines[start][0]}:
            raise _Unsupported
        first_row, last_row = self.rows[start], self.rows[i - 1]
        if last_row - first_row != i - 1 - start or self.rows[start - 1] != first_row - 1:
            raise _Unsupported  # a blank or comment-like line inside (content there, not a comment)
        if last_row == len(self.raw) - 1:
            raise _Unsupported  # no line break after the text: clip keeps none
        end_row = self.rows[i] if i < len(self.lines) else len(self.raw)
        if any(self.raw[r] for r in range(last_row + 1, end_row)):
            raise _Unsupported  # a comment-like line after it could still be content
        if any(self.raw[r] != self.raw[r].rstrip(" ") for r in range(first_row, last_row + 1)):
            raise _Unsupported
        texts = [self.lines[j][1] for j in range(start, i)]
        return (" " if style == ">" else "\n").join(texts) + "\n", i

    def _count(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise _Unsupported

    def block(self, i: int, indent: int, depth: int) -> tuple[Any, int]:
        """The block node whose lines start at ``i``, all at ``indent``."""
        self._count(depth)
        first = self.lines[i][1]
        if first == "-" or first.startswith("- "):
            return self._sequence(i, indent, depth)
        return self._mapping(i, indent, depth, None)

    def _sequence(self, i: int, indent: int, depth: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        while i < len(self.lines) and self.lines[i][0] == indent and self.lines[i][1].startswith("- "):
            content = self.lines[i][1][2:].lstrip(" ")
            column = indent + len(self.lines[i][1]) - len(content)
            if _key_of(content) is not None:
                # "- key: value": a mapping whose first line shares the dash's line.
                value, i = self._mapping(i, column, depth + 1, content)
            else:
                value = self._inline(content, depth + 1)
                i += 1
                if i < len(self.lines) and self.lines[i][0] > indent:
                    raise _Unsupported  # a continued plain scalar, or a nested block we do not read
            out.append(value)
        if i < len(self.lines) and self.lines[i][0] > indent:
            raise _Unsupported
        return out, i

    def _mapping(self, i: int, indent: int, depth: int, first: str | None) -> tuple[dict[Any, Any], int]:
        out: dict[Any, Any] = {}
        line = first if first is not None else self.lines[i][1]
        while True:
            key_text = _key_of(line)
            if key_text is None:
                raise _Unsupported
            key = _plain(key_text)
            if type(key) is not str or key in out or key == "<<":
                raise _Unsupported
            rest = line[len(key_text) + 1:].lstrip(" ")
            i += 1
            if rest in (">", "|"):
                out[key], i = self._block_scalar(i, indent, rest, depth + 1)
            elif rest and not rest.startswith("#"):
                out[key] = self._inline(rest, depth + 1)
                if i < len(self.lines) and self.lines[i][0] > indent:
                    raise _Unsupported  # a plain scalar continued on the next line
            elif i < len(self.lines) and self.lines[i][0] > indent:
                out[key], i = self.block(i, self.lines[i][0], depth + 1)
            elif i < len(self.lines) and self.lines[i][0] == indent and self.lines[i][1].startswith("- "):
                out[key], i = self._sequence(i, indent, depth + 1)  # a sequence may sit at its key's indent
            else:
                self._count(depth + 1)
                out[key] = None
            if i >= len(self.lines) or self.lines[i][0] != indent:
                break
            line = self.lines[i][1]
            if line.startswith("-"):
                raise _Unsupported
        if i < len(self.lines) and self.lines[i][0] > indent:
            raise _Unsupported
        return out, i

    def _inline(self, text: str, depth: int) -> Any:
        self._count(depth)
        if text[0] in "\"'":
            return _quoted(text)
        if text[0] == "[":
            return self._flow_list(text, depth)
        if text[0] == "{":
            return self._flow_mapping(text, depth)
        value_text = _strip_comment(text)
        return _plain(value_text)

    def _flow_mapping(self, text: str, depth: int) -> dict[str, Any]:
        """``{}`` or ``{key: word, key: 1}`` on one line: plain keys and plain values only."""
        close = text.find("}")
        if close == -1 or not _comment_only(text[close + 1:]):
            raise _Unsupported
        inner = text[1:close]
        if any(c in inner for c in "[]{}\"'#&*!|>%@`?"):
            raise _Unsupported
        out: dict[str, Any] = {}
        if not inner.strip(" "):
            return out
        for item in inner.split(","):
            key_text, sep, value_text = item.strip(" ").partition(": ")
            plain_key = sep and _key_of(key_text + ":") == key_text
            key, value_text = _plain(key_text) if plain_key else None, value_text.strip(" ")
            if type(key) is not str or key in out or not value_text or ":" in value_text:
                raise _Unsupported
            self._count(depth + 1)
            out[key] = _plain(value_text)
        return out

    def _flow_list(self, text: str, depth: int) -> list[Any]:
        close = text.find("]")
        if close == -1 or not _comment_only(text[close + 1:]):
            raise _Unsupported
        inner = text[1:close]
        if any(c in inner for c in "[]{}\"'#&*!|>%@`"):
            raise _Unsupported
        if not inner.strip(" "):
            return []
        out = []
        for item in inner.split(","):
            item = item.strip(" ")
            if not item or ":" in item:
                raise _Unsupported
            self._count(depth + 1)
            out.append(_plain(item))
        return out


def _key_of(line: str) -> str | None:
    """The plain key of a ``key: ...`` line (``key:`` at the end too), else None."""
    at = line.find(":")
    while at != -1:
        if at + 1 == len(line) or line[at + 1] == " ":
            key = line[:at]
            return key if key and key[0] in _WORD_START and all(c.isalnum() or c in "_-./" for c in key) else None
        at = line.find(":", at + 1)
    return None


def _comment_only(rest: str) -> bool:
    rest = rest.lstrip(" ")
    return not rest or rest.startswith("#")


def _strip_comment(text: str) -> str:
    at = text.find(" #")
    return (text[:at] if at != -1 else text).rstrip(" ")


def _quoted(text: str) -> str:
    """A one-line quoted scalar without escapes, then nothing but a comment."""
    quote = text[0]
    close = text.find(quote, 1)
    if close == -1 or "\\" in text[1:close] or not _comment_only(text[close + 1:]):
        raise _Unsupported
    if quote == "'" and text[close + 1:close + 2] == "'":
        raise _Unsupported  # '' is an escaped quote
    return text[1:close]


def _plain(text: str) -> Any:
    """A one-line plain scalar typed as YAML 1.1 does, for the forms read here with certainty."""
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if ": " in text or text.endswith(":") or " #" in text:
        raise _Unsupported
    head = text[0]
    if head in _WORD_START:
        # Starts like no number, date or special float. In a block plain scalar only ": " and " #"
        # (both refused above) mean anything after the first character.
        return text
    body = text[1:] if head == "-" else text
    if body and set(body) <= _DIGITS and (body == "0" or body[0] != "0"):
        return int(text)
    if _is_duration(text):
        return text
    raise _Unsupported


def _is_duration(text: str) -> bool:
    """``30s``, ``0.2s``, ``1h30m``: numbers with unit letters, which YAML 1.1 reads as strings."""
    i, n = 0, len(text)
    if n == 0 or text[0] not in _DIGITS:
        return False
    while i < n:
        start = i
        while i < n and text[i] in _DIGITS:
            i += 1
        if i < n and text[i] == ".":
            i += 1
            digits = i
            while i < n and text[i] in _DIGITS:
                i += 1
            if i == digits:
                return False
        if i == start:
            return False
        unit = next((u for u in _UNITS if text.startswith(u, i)), None)
        if unit is None:
            return False
        i += len(unit)
    return True
