"""PBS's limit syntax for `max_run`, `max_queued` and `max_run_res.<resource>`.

A limit is a list of entries `[u:PBS_GENERIC=2], [u:bob=5], [o:PBS_ALL=10]`: `u`
a user (PBS_GENERIC: every user without an entry of their own), `g` a group, `p` a
project, `o` the overall total (always PBS_ALL). An old-style plain number (`max_run
= 10`) is the overall total. The text is stored as it was set (qmgr prints it back so).

Enforced: `u` and `o` entries. `g` and `p` entries are kept but not enforced: pkbs's
users are token identities with no Unix group, and projects are not accounted.
max_run_res is enforced for ncpus (RUN_RESOURCES); other resources are kept only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from pkbs.errors import BadAttributeValue, EntityLimitReached

if TYPE_CHECKING:
    from pkbs.serverconfig import ServerConfig

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
# -- running jobs: max_run and max_run_res ------------------------------------------------
#
# What a check of max_run / max_run_res sees of the running jobs: each as a `Running`,
# kept in a ledger in KV (pkbs/runledger.py). A job is recorded there iff the server or
# its queue has a run limit (`run_limited`); the ledger is the users' own (`u.<user>`),
# or one for every job (`all`) while any overall ([o:PBS_ALL]) run limit is set.

# Resources max_run_res is enforced for (the ledger keeps each running job's ncpus).
RUN_RESOURCES = ("ncpus",)
ALL_LEDGER = "all"
NOT_RUNNING = "Not Running: "
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


class Running(NamedTuple):
    """One running job as a run-limit check counts it."""

    job: str  # run key: `12` or `12.7` (a subjob)
    owner: str
    queue: str
    ncpus: int


class _Scope(NamedTuple):
    limits: dict[tuple[str, str], int]
    queue: str | None  # None: the server (the complex)


def _run_attrs(max_run: str | None, max_run_res: dict[str, str]) -> list[str]:
    return [text for text in (max_run, *max_run_res.values()) if text]


def run_limited(config: ServerConfig, queue: str) -> bool:
    """Whether a job of `queue` is subject to a run limit (server's or queue's)."""
    server = config.server
    if server.max_run or server.max_run_res:
        return True
    found = config.queues.get(queue)
    return found is not None and bool(found.max_run or found.max_run_res)


def any_run_limit(config: ServerConfig) -> bool:
    """Whether a run limit is set anywhere (else no run is recorded)."""
    return bool(config.server.max_run or config.server.max_run_res) or any(
        queue.max_run or queue.max_run_res for queue in config.queues.values()
    )


def ledger_key(config: ServerConfig, owner: str) -> str:
    """The KV key of the ledger that records `owner`'s running jobs: `all` while any
    overall run limit is set (on the server or any queue), else the user's own."""
    texts = _run_attrs(config.server.max_run, config.server.max_run_res)
    for queue in config.queues.values():
        texts += _run_attrs(queue.max_run, queue.max_run_res)
    for text in texts:
        if overall_limit(_parsed(text)) is not None:
            return ALL_LEDGER
    if _PLAIN_NAME.fullmatch(owner):
        return f"u.{owner}"
    return "x." + owner.encode().hex()  # KV keys allow only a few characters


def run_refusal(config: ServerConfig, job: Running, running: Iterable[Running]) -> str | None:
    """The comment PBS's scheduler gives a job it does not run because of a run limit
    (the first one `job` would exceed with `running`), or None: it may start. The
    checks go in the scheduler's order: the queue's and the server's max_run (overall,
    then per user), then their max_run_res. A job already in `running` (a rerun of a
    lost run) is not counted twice."""
    others = {r.job: r for r in running if r.job != job.job}.values()
    queue = config.queues.get(job.queue)
    scopes = [_Scope(_parsed(queue.max_run), job.queue)] if queue and queue.max_run else []
    if config.server.max_run:
        scopes.append(_Scope(_parsed(config.server.max_run), None))
    for scope in scopes:
        reason = _count_refusal(scope, job, others)
        if reason:
            return NOT_RUNNING + reason
    res_scopes = [(r, _Scope(_parsed(t), job.queue)) for r, t in
                  (queue.max_run_res.items() if queue else ()) if r in RUN_RESOURCES]
    res_scopes += [(r, _Scope(_parsed(t), None)) for r, t in
                   config.server.max_run_res.items() if r in RUN_RESOURCES]
    for resource, scope in res_scopes:
        reason = _sum_refusal(scope, resource, job, others)
        if reason:
            return NOT_RUNNING + reason
    return None


def _in_scope(scope: _Scope, others: Iterable[Running], owner: str | None) -> list[Running]:
    return [r for r in others if (scope.queue is None or r.queue == scope.queue)
            and (owner is None or r.owner == owner)]


def _count_refusal(scope: _Scope, job: Running, others: Iterable[Running]) -> str | None:
    where = "Server" if scope.queue is None else f"Queue {scope.queue}"
    overall = overall_limit(scope.limits)
    if overall is not None and len(_in_scope(scope, others, None)) >= overall:
        return f"{where} job limit has been reached."
    own = scope.limits.get(("u", job.owner))
    limit = own if own is not None else scope.limits.get(("u", GENERIC))
    if limit is None or len(_in_scope(scope, others, job.owner)) < limit:
        return None
    if own is not None:
        return f"{where} job limit reached for user {job.owner}"
    if scope.queue is None:
        return "User has reached server running job limit."
    return f"User has reached queue {scope.queue} running job limit."


def _sum_refusal(
    scope: _Scope, resource: str, job: Running, others: Iterable[Running]
) -> str | None:
    where = "complex" if scope.queue is None else f"queue {scope.queue}"
    overall = overall_limit(scope.limits)
    if overall is not None and sum(r.ncpus for r in _in_scope(scope, others, None)) + (
        job.ncpus
    ) > overall:
        return f"would exceed overall limit on resource {resource} in {where}"
    own = scope.limits.get(("u", job.owner))
    limit = own if own is not None else scope.limits.get(("u", GENERIC))
    used = sum(r.ncpus for r in _in_scope(scope, others, job.owner))
    if limit is None or used + job.ncpus <= limit:
        return None
    if own is not None:
        return f"would exceed user {job.owner}'s limit on resource {resource} in {where}"
    if scope.queue is None:
        return f"Server per-user limit reached on resource {resource}"
    return f"Queue {scope.queue} per-user limit reached on resource {resource}"


# -- queued jobs: max_queued ------------------------------------------------------------


def queued_refusal(
    config: ServerConfig, queue: str, owner: str, have: QueuedCounts, adding: int
) -> EntityLimitReached | None:
    """PBS's refusal of a submission of `adding` jobs (an array: its subjobs) by
    `owner` to `queue` that would pass max_queued, the server's first, then the
    queue's; each overall, then per user. `have` counts the jobs not finished."""
    found = config.queues.get(queue)
    checks: list[tuple[str | None, str | None]] = [(config.server.max_queued, None)]
    if found is not None:
        checks.append((found.max_queued, queue))
    for text, scope in checks:
        if not text:
            continue
        limits = _parsed(text)
        overall = overall_limit(limits)
        if overall is not None and have.total(scope) + adding > overall:
            where = "complex" if scope is None else f"queue {scope}"
            return EntityLimitReached(f"Maximum number of jobs already in {where}")
        own = limits.get(("u", owner))
        limit = own if own is not None else limits.get(("u", GENERIC))
        if limit is None or have.of_user(scope) + adding <= limit:
            continue
        if own is not None:
            where = "complex" if scope is None else f"queue {scope}"
            return EntityLimitReached(f"Maximum number of jobs for user {owner} already in {where}")
        # OpenPBS prints "generic" where its format expects the queue's name.
        where = "complex's" if scope is None else "queue generic's"
        return EntityLimitReached(f"would exceed {where} per-user limit")
    return None


def queued_limited(config: ServerConfig, queue: str) -> bool:
    found = config.queues.get(queue)
    return bool(config.server.max_queued or (found is not None and found.max_queued))


class QueuedCounts(NamedTuple):
    """Jobs not finished (an array: its subjobs not ended), for a max_queued check:
    everybody's and the submitter's, in the whole server and in the queue."""

    server_total: int
    server_user: int
    queue_total: int
    queue_user: int

    def total(self, queue: str | None) -> int:
        return self.server_total if queue is None else self.queue_total

    def of_user(self, queue: str | None) -> int:
        return self.server_user if queue is None else self.queue_user


@lru_cache(maxsize=256)
def _parsed_cached(text: str) -> tuple[tuple[tuple[str, str], int], ...]:
    return tuple(parse_limits(text).items())


def _parsed(text: str) -> dict[tuple[str, str], int]:
    """parse_limits of a stored value (checked when it was set), cached: the checks run
    for every job start while limits are set."""
    return dict(_parsed_cached(text))
