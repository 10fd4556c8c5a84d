"""What `qmgr -c list` and `qmgr -c print` print (OpenPBS qmgr.c display()).

- list: `Queue workq` / `Server pkbs`, then `    name = value` per attribute; a value
  with commas goes on on a new line, after a tab, where the line would reach 80
  characters; a blank line after each object.
- print: commands that make the object again: `create queue workq`, then one
  `set queue workq name = value` per settable attribute. A one-string attribute
  (default_queue, comment) is printed whole, quoted with `"` (`'` if it holds a `"`)
  when it holds a blank, a comma or a quote; any other value is cut at its commas,
  the first piece set with `=` and each further one added with `+=`, each piece
  quoted so. Headers are `#` comment lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

QUEUES_HEADER = "#\n# Create queues and set their attributes.\n#\n"
SERVER_HEADER = "#\n# Set server attributes.\n#\n"
WRAP_AT = 80


def _value_text(value: object) -> str:
    return str(value)


def list_object(title: str, attributes: Mapping[str, object]) -> str:
    """`Queue workq` / `Server pkbs` and its attributes, as `list` prints them."""
    out = [f"{title}\n"]
    for name, value in attributes.items():
        text = _value_text(value)
        line = f"    {name} = "
        length = len(name) + 8 + 3
        pieces = text.split(",")
        for i, piece in enumerate(pieces):
            length += len(piece) + 1
            if i and length >= WRAP_AT:
                line += "\n\t"
                piece = piece.lstrip()
            line += piece
            if i < len(pieces) - 1:
                line += ","
        out.append(line + "\n")
    out.append("\n")
    return "".join(out)


def _quoted(text: str) -> str:
    if not any(char in text for char in "\"' ,"):
        return text
    quote = "'" if '"' in text else '"'
    return f"{quote}{text}{quote}"


def set_lines(
    target: str, attributes: Iterable[tuple[str, object]], strings: frozenset[str]
) -> str:
    """`set <target> name = value` lines (`target`: `server`, `queue workq`)."""
    out = []
    for name, value in attributes:
        text = _value_text(value)
        if name in strings:
            out.append(f"set {target} {name} = {_quoted(text)}\n")
            continue
        for i, piece in enumerate(text.split(",")):
            out.append(f"set {target} {name} {'+=' if i else '='} {_quoted(piece)}\n")
    return "".join(out)


def print_queue(
    name: str, attributes: Iterable[tuple[str, object]], strings: frozenset[str]
) -> str:
    """One queue as `print` makes it again (after QUEUES_HEADER)."""
    head = f"#\n# Create and define queue {name}\n#\ncreate queue {name}\n"
    return head + set_lines(f"queue {name}", attributes, strings)


def print_server(attributes: Iterable[tuple[str, object]], strings: frozenset[str]) -> str:
    return SERVER_HEADER + set_lines("server", attributes, strings)
