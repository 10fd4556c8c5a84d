"""PBS's limit syntax for `max_run`, `max_queued` and `max_run_res.<resource>`.

A limit is a list of entries `[u:PBS_GENERIC=2], [u:bob=5], [o:PBS_ALL=10]`: `u`
a user (PBS_GENERIC: every user without an entry of their own), `g` a group, `p` a
project, `o` the overall total (always PBS_ALL). An old-style plain number (`max_run
= 10`) is the overall total. The text is stored as it was set (qmgr prints it back so).
"""

from __future__ import annotations

import re

from pkbs.errors import BadAttributeValue

GENERIC = "PBS_GENERIC"
ALL = "PBS_ALL"
_ENTRY = re.compile(r"\[\s*([ugpo])\s*:\s*([^=\]\s]+)\s*=\s*(\d+)\s*\]")


def parse_limits(text: str) -> dict[tuple[str, str], int]:
    """`"[u:PBS_GENERIC=2], [u:bob=5]"` -> {("u", "PBS_GENERIC"): 2, ("u", "bob"): 5}."""
    text = text.strip().strip('"').strip()
    if text.isdigit():
        return {("o", ALL): int(text)}
    limits: dict[tuple[str, str], int] = {}
    rest = text
    while rest:
        found = _ENTRY.match(rest)
        if found is None:
            raise BadAttributeValue(f"Illegal attribute or resource value: {text}")
        kind, name, value = found.groups()
        if kind == "o" and name != ALL:
            raise BadAttributeValue(f"Illegal attribute or resource value: {text}")
        limits[(kind, name)] = int(value)
        rest = rest[found.end():].lstrip().removeprefix(",").lstrip()
    if not limits:
        raise BadAttributeValue(f"Illegal attribute or resource value: {text}")
    return limits


def user_limit(limits: dict[tuple[str, str], int], user: str) -> int | None:
    """The limit that applies to `user`: their own entry, else PBS_GENERIC's, else none."""
    own = limits.get(("u", user))
    return own if own is not None else limits.get(("u", GENERIC))


def overall_limit(limits: dict[tuple[str, str], int]) -> int | None:
    return limits.get(("o", ALL))


def format_limits(limits: dict[tuple[str, str], int]) -> str:
    """{("u", "PBS_GENERIC"): 2, ("u", "bob"): 5} -> `[u:PBS_GENERIC=2],[u:bob=5]`, as
    the server shows a limit."""
    return ",".join(f"[{kind}:{name}={value}]" for (kind, name), value in limits.items())
