"""json.dumps / json.loads for the CLI, without importing the json package.

The json package compiles six regular expressions at import and imports re (with enum,
functools, collections): several milliseconds of a qsub that otherwise needs neither.
CPython's C accelerator ``_json`` (what json itself uses for exactly these calls) has
everything dumps and loads need; this calls it directly and falls back to json where
there is no ``_json`` (PyPy). Output and results are json's: tests/test_cli_startup.py
compares them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class _TextFile(Protocol):
        def read(self) -> str: ...

        def write(self, text: str, /) -> int: ...


_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


def _default(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


class _Context:
    """The attributes _json.make_scanner reads (json.JSONDecoder's, at their defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


try:
    import _json
except ImportError:  # not CPython: the json package
    import json

    def dumps(value: Any) -> str:
        return json.dumps(value)

    def loads(data: str | bytes) -> Any:
        return json.loads(data)

else:
    # typeshed types the argument as a scanner; any object with these attributes does.
    _scan = _json.make_scanner(_Context())  # type: ignore[arg-type]

    def dumps(value: Any) -> str:
        """json.dumps(value) with its default arguments."""
        encode = _json.make_encoder(
            {}, _default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
        )
        return "".join(encode(value, 0))

    def loads(data: str | bytes) -> Any:
        """json.loads(data) for str or UTF-8 bytes; ValueError (JSONDecodeError) if bad."""
        if isinstance(data, bytes):  # json.loads: UTF-8, with or without a BOM
            bom = data.startswith(b"\xef\xbb\xbf")
            text = data.decode("utf-8-sig" if bom else "utf-8", "surrogatepass")
        elif data.startswith("\ufeff"):
            raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
        else:
            text = data
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except StopIteration:
            raise ValueError(f"Expecting value: char {start}") from None
        if text[end:].strip(_WHITESPACE):
            raise ValueError(f"Extra data: char {end}")
        return value


def load(fh: _TextFile) -> Any:
    return loads(fh.read())


def dump(value: Any, fh: _TextFile) -> None:
    fh.write(dumps(value))
