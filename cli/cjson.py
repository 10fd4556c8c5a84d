"""cJSON's reading and printing of JSON, as `qstat -F json` does them (OpenPBS builds
its JSON output with cJSON): each attribute value is parsed with cJSON_ParseWithOpts
and the document printed with cJSON_Print (tabs for indentation, ``"key":<TAB>value``,
numbers as doubles, an object may hold a key twice).

Standard library only: qstat must start fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class JNumber(float):
    """A number as cJSON holds it (a double)."""


class JObject(list[tuple[str, Any]]):
    """An ordered object that, like cJSON, may hold a key twice."""


_NUMBER_CHARS = frozenset("0123456789+-eE.")
_STRTOD_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_STRING_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n"}
_STRING_ESCAPES.update({"r": "\r", "t": "\t"})


class _Parser:
    """The subset of cJSON's parser that decides what a value becomes."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def ws(self) -> None:
        while self.i < len(self.s) and ord(self.s[self.i]) <= 32:
            self.i += 1

    def value(self, depth: int = 0) -> Any:
        s, i = self.s, self.i
        if depth > 1000:
            raise ValueError("too deep")
        for word, val in (("null", None), ("false", False), ("true", True)):
            if s.startswith(word, i):
                self.i += len(word)
                return val
        ch = s[i] if i < len(s) else ""
        if ch == '"':
            return self.string()
        if ch == "-" or "0" <= ch <= "9":
            return self.number()
        if ch == "[":
            return self.array(depth)
        if ch == "{":
            return self.object(depth)
        raise ValueError("not a value")

    def number(self) -> JNumber:
        j = self.i
        while j < len(self.s) and self.s[j] in _NUMBER_CHARS:
            j += 1
        m = _STRTOD_RE.match(self.s, self.i, j)
        if m is None:
            raise ValueError("not a number")
        self.i = m.end()
        return JNumber(float(m.group()))

    def string(self) -> str:
        s = self.s
        i = self.i + 1
        out: list[str] = []
        while True:
            if i >= len(s):
                raise ValueError("unterminated string")
            ch = s[i]
            if ch == '"':
                self.i = i + 1
                return "".join(out)
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            esc = s[i + 1] if i + 1 < len(s) else ""
            if esc in _STRING_ESCAPES:
                out.append(_STRING_ESCAPES[esc])
                i += 2
            elif esc == "u":
                code, i = self._utf16(i)
                out.append(chr(code))
            else:
                raise ValueError("bad escape")

    def _utf16(self, i: int) -> tuple[int, int]:
        hex1 = self.s[i + 2 : i + 6]
        if len(hex1) != 4 or not all(c in "0123456789abcdefABCDEF" for c in hex1):
            raise ValueError("bad \\u escape")
        code = int(hex1, 16)
        i += 6
        if 0xDC00 <= code <= 0xDFFF or code == 0:
            raise ValueError("bad \\u escape")
        if 0xD800 <= code <= 0xDBFF:
            hex2 = self.s[i + 2 : i + 6]
            if self.s[i : i + 2] != "\\u" or len(hex2) != 4:
                raise ValueError("bad surrogate")
            low = int(hex2, 16)
            if not 0xDC00 <= low <= 0xDFFF:
                raise ValueError("bad surrogate")
            code = 0x10000 + ((code & 0x3FF) << 10 | (low & 0x3FF))
            i += 6
        return code, i

    def array(self, depth: int) -> list[Any]:
        self.i += 1
        self.ws()
        items: list[Any] = []
        if self.s.startswith("]", self.i):
            self.i += 1
            return items
        while True:
            self.ws()
            items.append(self.value(depth + 1))
            self.ws()
            if self.s.startswith(",", self.i):
                self.i += 1
                continue
            if self.s.startswith("]", self.i):
                self.i += 1
                return items
            raise ValueError("bad array")

    def object(self, depth: int) -> JObject:
        self.i += 1
        self.ws()
        obj = JObject()
        if self.s.startswith("}", self.i):
            self.i += 1
            return obj
        while True:
            self.ws()
            if not self.s.startswith('"', self.i):
                raise ValueError("bad key")
            key = self.string()
            self.ws()
            if not self.s.startswith(":", self.i):
                raise ValueError("missing colon")
            self.i += 1
            self.ws()
            obj.append((key, self.value(depth + 1)))
            self.ws()
            if self.s.startswith(",", self.i):
                self.i += 1
                continue
            if self.s.startswith("}", self.i):
                self.i += 1
                return obj
            raise ValueError("bad object")


def parse(text: str) -> Any:
    """What `cJSON_ParseWithOpts(text, NULL, 1)` yields, or the text itself when it is
    not JSON (pbs_json_insert_parsed falls back to a string)."""
    p = _Parser(text[1:] if text.startswith("\ufeff") else text)
    try:
        p.ws()
        value = p.value()
        p.ws()
    except (ValueError, IndexError):
        return text
    return value if p.i >= len(p.s) else text


_INT_MAX = 2**31 - 1
_INT_MIN = -(2**31)


def _number(d: float) -> str:
    if d != d or d in (float("inf"), float("-inf")):
        return "null"
    valueint = _INT_MAX if d >= _INT_MAX else _INT_MIN if d <= _INT_MIN else int(d)
    if d == valueint:
        return str(valueint)
    text = f"{d:1.15g}"
    test = float(text)
    if abs(test - d) > max(abs(test), abs(d)) * 2.220446049250313e-16:
        text = f"{d:1.17g}"
    return text


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 32:
            named = {"\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}.get(ch)
            out.append(f"\\{named}" if named else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dumps(value: Any, depth: int = 0) -> str:
    """cJSON_Print (formatted) of a value made of JObject, list, str, numbers, bools,
    None."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return _number(float(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (JObject, Mapping)):
        pairs = list(value) if isinstance(value, JObject) else list(value.items())
        inner = "\t" * (depth + 1)
        body = "".join(
            f"{inner}{_string(k)}:\t{dumps(v, depth + 1)}"
            + ("," if n + 1 < len(pairs) else "")
            + "\n"
            for n, (k, v) in enumerate(pairs)
        )
        return "{\n" + body + "\t" * depth + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v, depth + 1) for v in value) + "]"
    return _string(str(value))
