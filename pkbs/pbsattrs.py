"""A job's, a queue's and the server's PBS attributes, as `qstat -f` shows them.

The dispatcher serves these dicts (GET /v1/jobs); `pkbs.cli.formats` prints them.
Names and order follow OpenPBS: the job attribute table
(`src/lib/Libattr/master_job_attr_def.xml`), resources sorted by name without
regard to case (`add_resource_entry`), and only attributes that are set.

Wire conventions:
- resources are flattened: ``"Resource_List.ncpus": "4"``;
- times (TIME_ATTRIBUTES) are int epoch seconds; the client prints them with ctime;
- session_id, Exit_status, run_count, Priority, queue_rank, substate are ints;
- Variable_List is a dict; everything else is a str.

Import-light: only the standard library at run time (the models are for typing).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pkbs.errors import BadAttributeValue
from pkbs.pbsvalues import (
    HOST_LEVEL_RESOURCES,
    TIME_ATTRIBUTES,
    format_size,
    normalize_resource,
    parse_select,
    parse_size,
)
from pkbs.states import JobState, is_final, shown_state
from pkbs.stdpaths import std_path

if TYPE_CHECKING:
    from pkbs.models import JobRecord
    from pkbs.nodes import Node

# Attributes whose values are ints on the wire.
INT_ATTRIBUTES = frozenset(
    {"session_id", "Exit_status", "run_count", "Priority", "queue_rank", "substate"}
)

# OpenPBS job attribute table order (master_job_attr_def.xml). Resource attributes
# (Resource_List, resources_used, estimated) stand for all their flattened entries.
JOB_ATTRIBUTE_ORDER: tuple[str, ...] = (
    "Job_Name",
    "Job_Owner",
    "resources_used",
    "job_state",
    "queue",
    "server",
    "Account_Name",
    "Checkpoint",
    "ctime",
    "depend",
    "Error_Path",
    "exec_host",
    "exec_vnode",
    "Execution_Time",
    "group_list",
    "Hold_Types",
    "interactive",
    "Join_Path",
    "Keep_Files",
    "Mail_Points",
    "Mail_Users",
    "mtime",
    "Output_Path",
    "Priority",
    "qtime",
    "Remove_Files",
    "Rerunable",
    "Resource_List",
    "schedselect",
    "stime",
    "obittime",
    "session_id",
    "Shell_Path_List",
    "sandbox",
    "jobdir",
    "stagein",
    "stageout",
    "substate",
    "User_List",
    "Variable_List",
    "euser",
    "egroup",
    "hashname",
    "hop_count",
    "queue_rank",
    "queue_type",
    "sched_hint",
    "comment",
    "alt_id",
    "etime",
    "umask",
    "block",
    "run_count",
    "accounting_id",
    "eligible_time",
    "accrue_type",
    "job_kill_delay",
    "Stageout_status",
    "Exit_status",
    "Submit_arguments",
    "executable",
    "argument_list",
    "array",
    "array_id",
    "array_index",
    "array_state_count",
    "array_indices_submitted",
    "array_indices_remaining",
    "estimated",
    "history_timestamp",
    "project",
    "Submit_Host",
    "credential_id",
    "credential_validity",
    "max_run_subjobs",
)
_ORDER_INDEX = {name: i for i, name in enumerate(JOB_ATTRIBUTE_ORDER)}
# pkbs-specific attributes, printed after all PBS ones.
PKBS_ATTRIBUTES: tuple[str, ...] = ("container_image", "results_url")
_RESOURCE_ATTRIBUTES = frozenset({"resources_used", "Resource_List", "estimated"})

# The attributes the default and alternate (-a -n -s) tables need.
SUMMARY_ATTRIBUTES = frozenset(
    {
        "Job_Name",
        "Job_Owner",
        "resources_used.cput",
        "resources_used.walltime",
        "job_state",
        "queue",
        "session_id",
        "Resource_List.nodect",
        "Resource_List.ncpus",
        "Resource_List.mem",
        "Resource_List.walltime",
        "Resource_List.cput",
        "exec_host",
        "comment",
    }
)

DEFAULT_PROJECT = "_pbs_project_default"
DEFAULT_MAIL_POINTS = "a"
DEFAULT_CHECKPOINT = "u"

# Consumable resources the server sums over the select chunks (set_chunk_sum).
_SUMMED_COUNTS = ("ncpus", "ngpus", "naccelerators", "mpiprocs")
_SUMMED_SIZES = ("mem", "vmem")

# PBS substates (src/include/job.h) for each pkbs state.
_SUBSTATES = {
    JobState.QUEUED: 10,
    JobState.HELD: 20,
    JobState.WAITING: 30,
    JobState.RUNNING: 42,
    JobState.SUSPENDED: 43,
    JobState.EXITING: 50,
    JobState.FINISHED: 92,
    JobState.BEGUN: 70,
    JobState.EXPIRED: 69,
}
_SUBSTATE_TERMINATED = 91
_SUBSTATE_FAILED = 93

# state_count as the server encodes it (req_stat.c update_state_ct): trailing space.
STATE_COUNT_NAMES: tuple[tuple[str, str], ...] = (
    ("Transit", "T"),
    ("Queued", "Q"),
    ("Held", "H"),
    ("Waiting", "W"),
    ("Running", "R"),
    ("Exiting", "E"),
    ("Begun", "B"),
)


# ---------------------------------------------------------------------------
# Resource_List


def _select_value(value: str) -> str:
    # set_select_and_place quotes values holding select syntax characters.
    if any(c in value for c in "\"'+:=()"):
        quote = "'" if '"' in value else '"'
        return f"{quote}{value}{quote}"
    return value


def resource_list(resources: Mapping[str, str]) -> dict[str, str]:
    """Resource_List as the server completes it: normalized values, select/place/nodect
    and chunk sums filled in (svr_jobfunc.c set_resc_deflt / set_chunk_sum)."""
    res = {k: normalize_resource(k, v) for k, v in resources.items()}
    if "select" in res:
        try:
            chunks = parse_select(res["select"])
        except BadAttributeValue:
            chunks = []
        if chunks:
            res["nodect"] = str(sum(n for n, _ in chunks))
            for name in _SUMMED_COUNTS:
                default = "1" if name == "ncpus" else None  # default_chunk.ncpus = 1
                counts = [(n, c.get(name, default)) for n, c in chunks]
                if any(v is not None for _, v in counts):
                    res[name] = str(sum(n * int(v) for n, v in counts if v is not None))
            for name in _SUMMED_SIZES:
                sizes = [n * parse_size(c[name]) for n, c in chunks if name in c]
                if sizes:
                    res[name] = format_size(sum(sizes), "exact")
        res.setdefault("place", "free")
    else:
        res.setdefault("ncpus", "1")
        host = sorted((k for k in res if k.lower() in HOST_LEVEL_RESOURCES), key=str.lower)
        res["select"] = ":".join(["1"] + [f"{k}={_select_value(res[k])}" for k in host])
        res.setdefault("place", "pack")
        res.setdefault("nodect", "1")
    return res


# ---------------------------------------------------------------------------
# Jobs


def _sorted_resources(prefix: str, resources: Mapping[str, str]) -> dict[str, object]:
    return {f"{prefix}.{k}": resources[k] for k in sorted(resources, key=str.lower)}


def _epoch(value: float | str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def _exec_host(hosts: str, ncpus: str) -> str:
    """`host/0*N` per host (`host/0` for one cpu) unless already in that form."""
    if "/" in hosts:
        return hosts
    slot = "0" if ncpus in ("", "1") else f"0*{ncpus}"
    return "+".join(f"{host}/{slot}" for host in hosts.split("+") if host)


def _exec_vnode(exec_host: str, resources: Mapping[str, str]) -> str:
    chunks = []
    for part in exec_host.split("+"):
        host = part.split("/", 1)[0]
        spec = f"{host}:ncpus={resources.get('ncpus', '1')}"
        if "mem" in resources:
            spec += f":mem={resources['mem']}"
        chunks.append(f"({spec})")
    return "+".join(chunks)


def _substate(record: JobRecord) -> int:
    if record.state == JobState.FINISHED:
        if record.deleted_by or record.delete_requested:
            return _SUBSTATE_TERMINATED
        if record.exit_status not in (None, 0):
            return _SUBSTATE_FAILED
    return _SUBSTATES.get(record.state, 10)


def run_comment(stime: float, exec_vnode: str) -> str:
    """A running job's comment, as PBS's server sets it when the job is run: `Job run
    at Thu Dec 03 at 10:24 on (host:ncpus=1)` (local time; req_runjob.c)."""
    when = time.strftime("%a %b %d at %H:%M", time.localtime(stime))
    return f"Job run at {when} on {exec_vnode}"


def job_attributes(record: JobRecord) -> dict[str, object]:
    """The job's PBS attributes, in OpenPBS order, only those that are set."""
    spec = record.spec
    extra = dict(spec.attributes)
    owner = record.owner if "@" in record.owner else f"{record.owner}@{spec.submit_host}"
    resources = resource_list(spec.resources)
    state = shown_state(record.state, record.index is not None)

    values: dict[str, object | None] = {}
    # Attributes recorded as given come first so that pkbs's own values win.
    for key, val in extra.items():
        if key in TIME_ATTRIBUTES:
            values[key] = _epoch(val)
        elif key in INT_ATTRIBUTES:
            values[key] = _int_or_none(val)
        else:
            values[key] = val
    variables = dict(spec.variables)
    variables.setdefault("PBS_O_QUEUE", spec.queue)
    variables.setdefault("PBS_O_HOST", spec.submit_host)
    eligible = state not in (JobState.HELD, JobState.WAITING) or record.stime is not None
    values.update(
        {
            "Job_Name": spec.name,
            "Job_Owner": owner,
            "job_state": state.value,
            "queue": spec.queue,
            "server": record.server,
            "Checkpoint": extra.get("Checkpoint", DEFAULT_CHECKPOINT),
            "ctime": _epoch(record.ctime),
            "Error_Path": std_path(record, "e"),
            "Hold_Types": record.hold_types,
            "Join_Path": spec.join,
            "Keep_Files": spec.keep,
            "Mail_Points": extra.get("Mail_Points", DEFAULT_MAIL_POINTS),
            "mtime": _epoch(record.mtime),
            "Output_Path": std_path(record, "o"),
            "Priority": _int_or_none(extra.get("Priority", "0")) or 0,
            "qtime": _epoch(record.qtime),
            "Rerunable": "True" if spec.rerunnable else "False",
            "stime": _epoch(record.stime),
            "obittime": _epoch(record.obittime),
            "session_id": record.session_id,
            "Shell_Path_List": spec.shell or extra.get("Shell_Path_List"),
            "substate": _substate(record),
            "Variable_List": variables,
            "euser": record.euser,
            "queue_rank": _int_or_none(extra.get("queue_rank")) or record.number,
            "queue_type": "E",
            "comment": record.comment,
            "etime": _epoch(record.qtime) if eligible else None,
            # Set once the job has been run (absent from a job that never ran).
            "run_count": record.run_count or None,
            "Exit_status": record.exit_status,
            "Submit_arguments": spec.submit_args,
            "project": extra.get("project", DEFAULT_PROJECT),
            "Submit_Host": spec.submit_host,
        }
    )
    if spec.depend:
        values["depend"] = spec.depend
    if record.is_array:
        values["array"] = "True"
        values["array_indices_submitted"] = spec.array
        total = len(spec.array_indices())
        # Expired: subjobs that ended (finished or deleted); all of them once the
        # array has ended (deleted, its queued subjobs never run).
        running = 0 if is_final(state) else record.array_running
        expired = total if is_final(state) else record.array_done
        values["array_state_count"] = (
            f"Queued:{total - expired - running} Running:{running} Exiting:0 Expired:{expired} "
        )
    elif record.index is not None:
        values["array_id"] = record.array_id
        values["array_index"] = record.index
    if spec.exec_time is not None:
        values["Execution_Time"] = _epoch(spec.exec_time)
    if record.exec_host:
        host = _exec_host(record.exec_host, resources.get("ncpus", "1"))
        values["exec_host"] = host
        values["exec_vnode"] = extra.get("exec_vnode") or _exec_vnode(host, resources)
        if record.state == JobState.RUNNING and record.comment is None and record.stime:
            values["comment"] = run_comment(record.stime, str(values["exec_vnode"]))

    used = {k: normalize_resource(k, v) for k, v in record.resources_used.items()}
    out: dict[str, object] = {}
    for name in JOB_ATTRIBUTE_ORDER:
        if name == "resources_used":
            out.update(_sorted_resources("resources_used", used))
        elif name == "Resource_List":
            out.update(_sorted_resources("Resource_List", resources))
        elif name == "estimated":
            for key in sorted((k for k in values if k.startswith("estimated.")), key=str.lower):
                if values[key] is not None:
                    out[key] = values[key]
        elif values.get(name) is not None:
            out[name] = values[name]
    # Attributes pkbs does not know, as given, after the known ones (PBS's "_other_").
    for name, value in values.items():
        prefix = name.split(".", 1)[0]
        if name in out or name in PKBS_ATTRIBUTES or prefix in _RESOURCE_ATTRIBUTES:
            continue
        if name not in _ORDER_INDEX and value is not None:
            out[name] = value
    if record.spec.image:
        out["container_image"] = record.spec.image
    if record.results_url:
        out["results_url"] = record.results_url
    return out


def job_summary(record: JobRecord) -> dict[str, object]:
    """The subset of job_attributes the default and alternate tables print."""
    return {k: v for k, v in job_attributes(record).items() if k in SUMMARY_ATTRIBUTES}


def job_entry(record: JobRecord, *, full: bool = True) -> dict[str, object]:
    """One element of GET /v1/jobs' "jobs" list."""
    attrs = job_attributes(record) if full else job_summary(record)
    return {"id": record.job_id, "attributes": attrs}


# ---------------------------------------------------------------------------
# Queues and the server


def _counted(counts: Mapping[str, int], letter: str) -> int:
    """Jobs in the state of `letter`; a suspended job counts as running (PBS keeps it
    R with a substate, and shows S only in a job's own status)."""
    extra = counts.get(JobState.SUSPENDED.value, 0) if letter == JobState.RUNNING.value else 0
    return int(counts.get(letter, 0)) + int(extra)


def state_count(counts: Mapping[str, int]) -> str:
    """`Transit:0 Queued:1 Held:0 Waiting:0 Running:2 Exiting:0 Begun:0 ` (state letter
    → count; the trailing space is the server's)."""
    return "".join(f"{name}:{_counted(counts, letter)} " for name, letter in STATE_COUNT_NAMES)


def _total_jobs(counts: Mapping[str, int]) -> int:
    return sum(_counted(counts, letter) for _, letter in STATE_COUNT_NAMES)


def queue_attributes(
    name: str,
    counts: Mapping[str, int],
    *,
    queue_type: str = "Execution",
    enabled: bool = True,
    started: bool = True,
    max_running: int | None = None,
    max_queued: str | None = None,
    resources_max: Mapping[str, str] | None = None,
    resources_default: Mapping[str, str] | None = None,
    resources_assigned: Mapping[str, str] | None = None,
    comment: str | None = None,
    priority: int = 0,
    max_run: str | None = None,
    max_run_res: Mapping[str, str] | None = None,
    images: Iterable[str] | None = None,
) -> dict[str, object]:
    """A queue's attributes for `qstat -Q [-f]`, `qstat -q` and `qmgr -c "list queue"`
    (name is not included), in OpenPBS's order (master_queue_attr_def.xml); `images`,
    the container images its jobs may name, is pkbs's own, last."""
    out: dict[str, object] = {"queue_type": queue_type}
    if priority:
        out["Priority"] = priority
    out["total_jobs"] = _total_jobs(counts)
    out["state_count"] = state_count(counts)
    if max_running is not None:
        out["max_running"] = max_running
    if max_queued is not None:
        out["max_queued"] = max_queued
    out.update(_sorted_resources("resources_max", resources_max or {}))
    out.update(_sorted_resources("resources_default", resources_default or {}))
    if comment:
        out["comment"] = comment
    out.update(_sorted_resources("resources_assigned", resources_assigned or {}))
    if max_run is not None:
        out["max_run"] = max_run
    out.update(_sorted_resources("max_run_res", max_run_res or {}))
    out["hasnodes"] = "True"
    out["enabled"] = "True" if enabled else "False"
    out["started"] = "True" if started else "False"
    if images is not None:
        out["images"] = ",".join(images)
    return out


def server_attributes(
    name: str,
    queues: Iterable[str],
    counts: Mapping[str, int],
    *,
    version: str | None = None,
    default_queue: str | None = None,
    host: str | None = None,
    comment: str | None = None,
    resources_available: Mapping[str, str] | None = None,
    resources_assigned: Mapping[str, str] | None = None,
    max_job_sequence_id: int = 9999999,
    scheduling: bool = True,
    max_queued: str | None = None,
    max_run: str | None = None,
    max_run_res: Mapping[str, str] | None = None,
    resources_default: Mapping[str, str] | None = None,
    resources_max: Mapping[str, str] | None = None,
    job_history_enable: bool = True,
    job_history_duration: str | None = None,
) -> dict[str, object]:
    """The server's attributes for `qstat -B [-f]` and `qmgr -c "list server"` (name is
    printed as `Server: <name>`), in OpenPBS's order (master_svr_attr_def.xml)."""
    if version is None:
        from pkbs import __version__ as version
    queue_list = list(queues)
    if default_queue is None:
        from pkbs.constants import DEFAULT_QUEUE

        default_queue = (
            DEFAULT_QUEUE if not queue_list or DEFAULT_QUEUE in queue_list else (queue_list[0])
        )
    out: dict[str, object] = {
        "server_state": "Active",
        "server_host": host or name,
        "scheduling": "True" if scheduling else "False",
    }
    if max_queued is not None:
        out["max_queued"] = max_queued
    if max_run is not None:
        out["max_run"] = max_run
    out.update(_sorted_resources("max_run_res", max_run_res or {}))
    out["total_jobs"] = _total_jobs(counts)
    out["state_count"] = state_count(counts)
    if default_queue:
        out["default_queue"] = default_queue
    out["query_other_jobs"] = "False"  # users see only their own jobs
    out.update(_sorted_resources("resources_available", resources_available or {}))
    # PBS's server starts with resources_default.ncpus = 1.
    out.update(_sorted_resources("resources_default", {"ncpus": "1", **(resources_default or {})}))
    out["default_chunk.ncpus"] = "1"
    out.update(_sorted_resources("resources_max", resources_max or {}))
    out.update(_sorted_resources("resources_assigned", resources_assigned or {}))
    if comment:
        out["comment"] = comment
    out["flatuid"] = "True"
    out["pbs_version"] = version
    out["job_history_enable"] = "True" if job_history_enable else "False"
    if job_history_duration is not None:
        out["job_history_duration"] = job_history_duration
    out["max_job_sequence_id"] = max_job_sequence_id
    return out


def node_attributes(node: Node) -> dict[str, object]:
    """A worker's attributes as `pbsnodes -a` prints a node's, in OpenPBS order."""
    slots: list[str] = []
    for job_id, ncpus in node.jobs:
        slots += [f"{job_id}/{len(slots) + i}" for i in range(max(ncpus, 1))]
    out: dict[str, object] = {
        "Mom": node.host,
        "ntype": "PBS",
        "state": node.state,
        "pcpus": node.available.ncpus,
    }
    if slots:
        out["jobs"] = ", ".join(slots)
    available = {**node.available.as_pbs(), "host": node.host, "vnode": node.name}
    out.update(_sorted_resources("resources_available", available))
    out.update(_sorted_resources("resources_assigned", node.assigned.as_pbs()))
    out["resv_enable"] = "True"
    out["sharing"] = "default_shared"
    return out
