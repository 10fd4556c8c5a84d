"""Job models: what a client submits and what the KV store keeps per job."""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pkbs.constants import MAX_BATCH_JOBS
from pkbs.errors import PkbsError
from pkbs.pbsvalues import format_job_id, parse_array_range, parse_duration
from pkbs.states import JobState

PayloadKind = Literal["stdin", "file", "dir"]


class JobSpec(BaseModel):
    """A job as qsub describes it: PBS options plus how to start the payload."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=236)
    # Empty: the server's default_queue (qmgr), filled in at submit.
    queue: str = ""
    kind: PayloadKind
    # Name of the file that is run, at the top of the job directory.
    entrypoint: str = Field(min_length=1, max_length=255, pattern=r"^[^/\\\x00-\x1f]+$")
    # "file": the payload is the entrypoint itself; "zip": a directory, zipped.
    payload_format: Literal["zip", "file"] = "zip"

    @field_validator("entrypoint")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError("entrypoint must name a file")
        return value

    shell: str | None = None
    resources: dict[str, str] = Field(default_factory=dict)
    variables: dict[str, str] = Field(default_factory=dict)
    output_path: str | None = None
    error_path: str | None = None
    join: str = "n"
    keep: str = "n"
    hold: bool = False
    rerunnable: bool = True
    # qsub -a: not before this time (epoch seconds).
    exec_time: float | None = None
    # qsub -W depend=..., job ids normalised (e.g. "afterok:12.pkbs:13.pkbs").
    depend: str | None = None
    # qsub -J: the subjob indices, "start-end[:step]".
    array: str | None = Field(None, pattern=r"^\d+-\d+(:\d+)?$")

    @field_validator("array")
    @classmethod
    def _array_bounds(cls, value: str | None) -> str | None:
        """Indices in order, within PBS's range, not more subjobs than an array may have."""
        if value is not None:
            try:
                parse_array_range(value)
            except PkbsError as exc:
                raise ValueError(exc.message) from None
        return value

    def array_indices(self) -> range:
        if self.array is None:
            return range(0)
        bounds, _, step = self.array.partition(":")
        start, _, end = bounds.partition("-")
        return range(int(start), int(end) + 1, int(step or 1))

    @property
    def max_run_subjobs(self) -> int | None:
        """How many subjobs of the array may run at once (-J X-Y%N, -W
        max_run_subjobs=N); None: no limit."""
        value = self.attributes.get("max_run_subjobs") if self.array is not None else None
        return int(value) if value is not None and value.isdigit() and int(value) > 0 else None

    # The image a container job runs in (-v CONTAINER_IMAGE=..., docs/containers.md);
    # None: the worker's own environment.
    image: str | None = Field(None, max_length=512)

    submit_host: str = "localhost"
    # Other PBS attributes recorded as given (Account_Name, project, Mail_Points...).
    attributes: dict[str, str] = Field(default_factory=dict)
    submit_args: str | None = None


class SubmitRequest(BaseModel):
    """Body of POST /v1/jobs."""

    model_config = ConfigDict(extra="forbid")

    submit_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    spec: JobSpec
    payload_b64: str


class SubmitResponse(BaseModel):
    job_id: str
    duplicate: bool = False


class BatchSubmitRequest(BaseModel):
    """Body of POST /v1/jobs/batch: many submissions in one request (the body limit
    of one submit applies to the whole batch)."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[SubmitRequest] = Field(min_length=1, max_length=MAX_BATCH_JOBS)


class BatchSubmitResponse(BaseModel):
    jobs: list[SubmitResponse]  # in the order of the request


class ResultFile(BaseModel):
    """A file the job produced. Empty files are recorded but not uploaded."""

    name: str
    size: int


class JobRecord(BaseModel):
    """One KV record per job. Changes are compare-and-set on the KV revision.

    An array job has one record for the array (index None) and one per subjob
    (index set), made when the subjob first starts or is deleted. Frozen: a change
    makes a new record, through pkbs.lifecycle."""

    model_config = ConfigDict(frozen=True)

    number: int
    index: int | None = None
    server: str
    owner: str
    spec: JobSpec
    state: JobState
    submit_id: str
    ctime: float = Field(default_factory=time.time)
    qtime: float = Field(default_factory=time.time)
    mtime: float = Field(default_factory=time.time)
    stime: float | None = None
    obittime: float | None = None
    hold_types: str = "n"
    run_count: int = 0
    # Bumped at every enqueue: part of the work message id (dedup per enqueue).
    enqueue_count: int = 0
    # Dependencies not yet met: type -> numbers of the jobs waited for.
    depend_pending: dict[str, list[int]] = Field(default_factory=dict)
    # Jobs waiting for this one (they are told when it starts and ends).
    dependents: list[int] = Field(default_factory=list)
    # qrerun of a running job: the run is killed and the job queued again.
    rerun_requested: bool = False
    # Array jobs: subjobs ended so far, how many of them failed, and how many ran
    # (R, S or E) when they were last counted (array_state_count).
    array_done: int = 0
    array_failed: int = 0
    array_running: int = 0
    # Fences a run: only the worker holding this token may record its outcome.
    run_token: str | None = None
    # Stream sequence of the work message that started the current run: only a
    # redelivery of that message may restart a run whose worker was lost.
    work_seq: int | None = None
    worker: str | None = None
    exec_host: str | None = None
    # The account the job's processes run as (qstat's euser), set when a run starts
    # as a process of its worker; None until then, and for container and pod jobs.
    euser: str | None = None
    session_id: int | None = None
    exit_status: int | None = None
    resources_used: dict[str, str] = Field(default_factory=dict)
    delete_requested: bool = False
    deleted_by: str | None = None
    # The job's results: those of the run that finished it, each run storing its own
    # in a WebDAV collection (pkbs.results.run_results_path). results_url is that
    # collection's URL (qstat -f), results_path its server path; None in records
    # written before runs had their own: then the job's collection itself holds them.
    results_url: str | None = None
    results_path: str | None = None
    results: list[ResultFile] = Field(default_factory=list)
    comment: str | None = None

    @property
    def is_array(self) -> bool:
        return self.spec.array is not None and self.index is None

    @property
    def job_id(self) -> str:
        array = self.spec.array is not None
        return format_job_id(self.number, self.server, index=self.index, array=array)

    @property
    def array_id(self) -> str:
        return format_job_id(self.number, self.server, array=True)

    def _std_name(self, kind: str, path: str | None, dir_suffix: str) -> str:
        """The file name of stdout/stderr as PBS names it: `-o file` keeps its base
        name, `-o dir/` gives `<jobid>.OU`, no -o gives `<name>.o<seq>[.<index>]`."""
        if path:
            local = path.split(":", 1)[1] if ":" in path else path
            if local.endswith("/"):
                return f"{self.job_id}.{dir_suffix}"
            base = local.rsplit("/", 1)[-1]
            if base not in ("", ".", ".."):
                return base
        suffix = "" if self.index is None else f".{self.index}"
        return f"{self.spec.name}.{kind}{self.number}{suffix}"

    @property
    def output_streams(self) -> tuple[str, ...]:
        """The output streams that have a file of their own: -j oe writes stderr into
        stdout's, -j eo stdout into stderr's."""
        join = self.spec.join
        return ("stdout",) if join == "oe" else ("stderr",) if join == "eo" else (
            "stdout", "stderr")

    @property
    def output_name(self) -> str:
        return self._std_name("o", self.spec.output_path, "OU")

    @property
    def error_name(self) -> str:
        return self._std_name("e", self.spec.error_path, "ER")

    def subjob(self, index: int) -> JobRecord:
        """The record a subjob of this array starts from (queued, nothing run yet)."""
        return self.model_copy(
            deep=True,
            update={
                "index": index,
                "state": JobState.QUEUED,
                "dependents": [],
                "depend_pending": {},
                "array_done": 0,
                "array_failed": 0,
                "array_running": 0,
                "hold_types": "n",
                "stime": None,
                "obittime": None,
                "exit_status": None,
                "run_count": 0,
                "comment": None,
            },
        )


class WorkItem(BaseModel):
    """Body of a work-queue message: which job to run. Never credentials."""

    number: int
    queue: str
    index: int | None = None  # subjob of an array
    # A span of an array's subjobs, index..last in the array's step: not run itself,
    # it is expanded into the next subjob messages when a worker takes it.
    last: int | None = None
    enqueue_count: int = 0  # the array's enqueue the span belongs to
    # A small payload (a short script) rides along, saving the worker a round trip.
    payload: str | None = None  # base64
    # The record as it was queued and its KV revision: the worker's compare-and-set
    # tries it first (it fails harmlessly if the record changed since).
    record: JobRecord | None = None
    revision: int | None = None

    def payload_bytes(self) -> bytes | None:
        if self.payload is None:
            return None
        import base64

        return base64.b64decode(self.payload)


class JobList(BaseModel):
    jobs: list[JobRecord]


class ServerInfo(BaseModel):
    name: str
    version: str
    queues: list[str]


class TokenRequest(BaseModel):
    user: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
    role: Literal["user", "admin"] = "user"


class TokenResponse(BaseModel):
    user: str
    role: str
    token: str


class HoldRequest(BaseModel):
    types: str = Field("u", pattern=r"^[uos]{1,3}$")


class SignalRequest(BaseModel):
    """qsig: a signal name (SIGUSR1, USR1) or number, or suspend / resume. A name no
    job knows is refused with PBS's "Unknown/illegal signal name"."""

    signal: str = Field(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")


class AlterRequest(BaseModel):
    """qalter: the attributes to change; absent ones stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=236)
    resources: dict[str, str] | None = None
    exec_time: float | None = None
    rerunnable: bool | None = None
    output_path: str | None = None
    error_path: str | None = None
    join: str | None = None
    keep: str | None = None
    shell: str | None = None
    attributes: dict[str, str] | None = None
    depend: str | None = None  # -W depend=...: replaces the job's dependencies

    # While a job runs, only these may change: the resources PBS marks ATR_DFLAG_ALTRUN
    # (master_resc_def_all.xml). All are durations; users may only lower them.
    RUNNING_RESOURCES: ClassVar[frozenset[str]] = frozenset(
        {"walltime", "cput", "soft_walltime", "min_walltime", "max_walltime"}
    )

    def touches_only_running_limits(self) -> bool:
        fields = self.model_dump(exclude_none=True)
        return set(fields) <= {"resources"} and set(self.resources or {}) <= self.RUNNING_RESOURCES

    def raises_limits(self, current: dict[str, str]) -> bool:
        """Whether it raises a time limit the job has (PBS's comp_resc: a limit the
        job does not have is not compared, so setting one never raises it)."""
        return any(
            name in self.RUNNING_RESOURCES
            and name in current
            and parse_duration(value) > parse_duration(current[name])
            for name, value in (self.resources or {}).items()
        )
