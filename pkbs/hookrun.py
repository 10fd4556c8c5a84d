"""Running the hooks of one event, each in its own process, as PBS runs them.

Each hook is a fresh `python -I -m pkbs.pbshook` (pkbs/pbshook.py is its `pbs` module):
the event and the job go in as JSON on stdin, the outcome (accept or reject, the
message, the job's attributes it set, its log lines) comes back as JSON on stdout.
The process runs as the caller (the dispatcher or the worker), in a session of its
own, without the caller's `PKBS_*` environment, and is killed at its `alarm`.
The hooks of an event run one after the other in `order`, each seeing the job as
the ones before left it; the first that rejects (or fails) ends the event.

Which job attributes a hook may set at each event follows PBS (SETTABLE); what the
changes do to a job is the caller's: pkbs/hookjobs.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from pkbs import pbshook
from pkbs.hookstore import EXECJOB_BEGIN, EXECJOB_END, MODIFYJOB, QUEUEJOB, Hook

log = logging.getLogger("pkbs.hook")

# The job attributes a hook may set, per event. queuejob: what qsub could have
# given; modifyjob: what qalter could change; on the execution host only the
# comment, the environment of the run about to start, and usage at its end.
_REQUEST_ATTRIBUTES = (
    "Job_Name",
    "Resource_List",
    "Account_Name",
    "project",
    "Priority",
    "Rerunable",
    "Output_Path",
    "Error_Path",
    "Execution_Time",
    "Mail_Points",
    "Mail_Users",
    "comment",
)
SETTABLE: dict[str, tuple[str, ...]] = {
    QUEUEJOB: (*_REQUEST_ATTRIBUTES, "queue", "Variable_List", "Hold_Types"),
    MODIFYJOB: _REQUEST_ATTRIBUTES,
    EXECJOB_BEGIN: ("comment", "Variable_List"),
    EXECJOB_END: ("comment", "resources_used"),
}
_MERGED = ("Resource_List", "resources_used")  # changes add up per resource

# What is kept of a failing hook's stderr in the log.
STDERR_LOGGED = 4096

_LOG_LEVELS = {
    pbshook.LOG_ERROR: logging.ERROR,
    pbshook.EVENT_ERROR: logging.ERROR,
    pbshook.LOG_WARNING: logging.WARNING,
}


@dataclass(frozen=True)
class HookOutcome:
    """How the hooks of one event ended."""

    accepted: bool
    # Rejected: what the requester is told (PBS's wording when the hook gave none).
    message: str | None = None
    # The job attributes the hooks set (resources and usage: per resource, None
    # unsets), and the job as the last hook left it.
    changes: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    rejected_by: str | None = None


async def run_hooks(
    hooks: list[Hook],
    event: str,
    job: dict[str, Any],
    *,
    requestor: str | None = None,
    requestor_host: str | None = None,
    job_o: dict[str, Any] | None = None,
) -> HookOutcome:
    """Run `hooks` (in the order given) at `event` on `job` (its PBS attributes,
    Resource_List, resources_used and Variable_List as dicts)."""
    job = dict(job)
    changes: dict[str, Any] = {}
    for hook in hooks:
        given = {
            "type": event,
            "hook_name": hook.name,
            "requestor": requestor,
            "requestor_host": requestor_host,
            "job": job,
            "job_o": job_o,
            "settable": list(SETTABLE[event]),
            "script": hook.script,
        }
        outcome = await _run_one(hook, event, given, job.get("id"))
        if not outcome.accepted:
            return outcome
        for name, value in outcome.changes.items():
            if name in _MERGED:
                merged = {**(changes.get(name) or {}), **value}
                changes[name] = merged
                kept = {k: v for k, v in {**(job.get(name) or {}), **value}.items()}
                job[name] = {k: v for k, v in kept.items() if v is not None}
            else:
                changes[name] = value
                job[name] = value
    return HookOutcome(True, changes=changes, job=job)


async def _run_one(
    hook: Hook, event: str, given: dict[str, Any], job_id: object
) -> HookOutcome:
    where = {"hook": hook.name, "job": job_id}
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-m",
            "pkbs.pbshook",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tempfile.gettempdir(),
            env={k: v for k, v in os.environ.items() if not k.startswith("PKBS_")},
            start_new_session=True,
        )
    except OSError:
        log.exception("%s hook '%s' could not start, request rejected", event, hook.name,
                      extra=where)
        return _failed(hook, "encountered an exception")
    try:
        out, err = await asyncio.wait_for(
            process.communicate(json.dumps(given).encode()), hook.alarm
        )
    except TimeoutError:
        _kill(process)
        await process.wait()
        log.error("alarm call while running %s hook '%s', request rejected", event, hook.name,
                  extra=where)
        return _failed(hook, "got an alarm call")
    finally:
        if process.returncode is None:  # cancelled: the hook goes too
            _kill(process)
            await process.wait()
    try:
        result = json.loads(out)
    except ValueError:
        result = {"exception": f"the hook process ended ({process.returncode}) without an outcome"}
    for level, text in result.get("logs", []):
        log.log(_LOG_LEVELS.get(level, logging.INFO), "%s", text, extra=where)
    if result.get("exception"):
        log.error(
            "%s hook '%s' encountered an exception, request rejected\n%s%s",
            event,
            hook.name,
            result["exception"],
            err[-STDERR_LOGGED:].decode(errors="replace"),
            extra=where,
        )
        return _failed(hook, "encountered an exception")
    if err:
        log.debug("%s", err[-STDERR_LOGGED:].decode(errors="replace"), extra=where)
    if not result.get("accept", True):
        message = result.get("reject_msg") or f"{event} request rejected by '{hook.name}'"
        log.info("%s request rejected by '%s': %s", event, hook.name, message, extra=where)
        return HookOutcome(False, message, rejected_by=hook.name)
    changes = result.get("changes") or {}
    allowed = SETTABLE[event]
    return HookOutcome(True, changes={k: v for k, v in changes.items() if k in allowed})


def _failed(hook: Hook, what: str) -> HookOutcome:
    """PBS's reply when a hook fails: its exception or its alarm rejects the request."""
    message = f"request rejected as filter hook '{hook.name}' {what}. Please inform Admin"
    return HookOutcome(False, message, rejected_by=hook.name)


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
