"""A job as a hook sees it (its PBS attributes), and what a hook's changes do to it.

- queuejob: the job as qsub sent it, before the queue's defaults and limits (PBS runs
  these hooks first); no id yet. Its changes make the JobSpec that is checked and
  stored, and a comment the new record starts with.
- modifyjob: `job` holds what qalter asks to change, `job_o` the job as it is; the
  hook's changes join the request.
- execjob_begin / execjob_end: the job's record as `qstat -f` shows it (at the end:
  with its Exit_status and usage); the worker applies the changes.
"""

from __future__ import annotations

from typing import Any

from pkbs.models import AlterRequest, JobRecord, JobSpec
from pkbs.pbsattrs import job_attributes

# Job attributes kept in JobSpec.attributes, as given.
_RECORDED = ("Account_Name", "project", "Priority", "Mail_Points", "Mail_Users")
_NESTED = ("Resource_List", "resources_used")


def record_job(record: JobRecord) -> dict[str, Any]:
    """The job's attributes as qstat -f shows them, resources as dicts."""
    attributes = job_attributes(record)
    view: dict[str, Any] = {"id": record.job_id}
    for name, value in attributes.items():
        head, dot, rest = name.partition(".")
        if dot and head in _NESTED:
            view.setdefault(head, {})[rest] = value
        else:
            view[name] = value
    return view


def _request_view(spec_values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec_values.items() if v is not None}


def queued_job(owner: str, spec: JobSpec) -> dict[str, Any]:
    """A submission as a queuejob hook sees it."""
    return _request_view(
        {
            "id": None,
            "Job_Name": spec.name,
            "Job_Owner": owner if "@" in owner else f"{owner}@{spec.submit_host}",
            "queue": spec.queue,
            "Resource_List": dict(spec.resources),
            "Variable_List": dict(spec.variables),
            "Hold_Types": "u" if spec.hold else "n",
            "Rerunable": "True" if spec.rerunnable else "False",
            "Output_Path": spec.output_path,
            "Error_Path": spec.error_path,
            "Execution_Time": None if spec.exec_time is None else int(spec.exec_time),
            "Submit_arguments": spec.submit_args,
            "Submit_Host": spec.submit_host,
            **{name: spec.attributes.get(name) for name in _RECORDED},
        }
    )


def altered_job(record: JobRecord, change: AlterRequest) -> dict[str, Any]:
    """A qalter request as a modifyjob hook sees it (`job`; `job_o` is record_job)."""
    given = change.attributes or {}
    return _request_view(
        {
            "id": record.job_id,
            "Job_Name": change.name,
            "Resource_List": dict(change.resources or {}),
            "Rerunable": None if change.rerunnable is None else str(change.rerunnable),
            "Output_Path": change.output_path,
            "Error_Path": change.error_path,
            "Execution_Time": None if change.exec_time is None else int(change.exec_time),
            **{name: given.get(name) for name in _RECORDED},
        }
    )


def _flag(value: object) -> bool:
    return str(value).strip().lower() in ("true", "t", "y", "yes", "1")


def _common(changes: dict[str, Any]) -> dict[str, Any]:
    """The changes both a JobSpec and a qalter request take, by field name."""
    values: dict[str, Any] = {}
    if "Job_Name" in changes:
        values["name"] = changes["Job_Name"]
    if "Rerunable" in changes:
        values["rerunnable"] = _flag(changes["Rerunable"])
    if "Output_Path" in changes:
        values["output_path"] = changes["Output_Path"]
    if "Error_Path" in changes:
        values["error_path"] = changes["Error_Path"]
    if "Execution_Time" in changes:
        value = changes["Execution_Time"]
        values["exec_time"] = None if value is None else float(value)
    return values


def _attributes(current: dict[str, str], changes: dict[str, Any]) -> dict[str, str]:
    kept = dict(current)
    for name in _RECORDED:
        if name in changes:
            if changes[name] is None:
                kept.pop(name, None)
            else:
                kept[name] = str(changes[name])
    return kept


def _resources(current: dict[str, str], changes: dict[str, Any]) -> dict[str, str]:
    kept = dict(current)
    for name, value in (changes.get("Resource_List") or {}).items():
        if value is None:
            kept.pop(name, None)
        else:
            kept[name] = value
    return kept


def changed_spec(spec: JobSpec, changes: dict[str, Any]) -> JobSpec:
    """The submission with a queuejob hook's changes (validated as any JobSpec)."""
    if not changes:
        return spec
    values = spec.model_dump()
    values.update(_common(changes))
    values["resources"] = _resources(spec.resources, changes)
    values["attributes"] = _attributes(spec.attributes, changes)
    if "queue" in changes:
        values["queue"] = str(changes["queue"])
    if "Variable_List" in changes:
        values["variables"] = dict(changes["Variable_List"] or {})
    if "Hold_Types" in changes:
        values["hold"] = "u" in str(changes["Hold_Types"] or "")
    return JobSpec.model_validate(values)


def changed_request(change: AlterRequest, changes: dict[str, Any]) -> AlterRequest:
    """A qalter request with a modifyjob hook's changes joined in."""
    if not changes:
        return change
    values = change.model_dump(exclude_none=True)
    values.update(_common(changes))
    if "Resource_List" in changes:
        values["resources"] = _resources(change.resources or {}, changes)
    if any(name in changes for name in _RECORDED):
        values["attributes"] = _attributes(change.attributes or {}, changes)
    return AlterRequest.model_validate(values)


def changed_comment(changes: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether the hooks set the comment, and to what."""
    if "comment" not in changes:
        return False, None
    value = changes["comment"]
    return True, None if value is None else str(value)
