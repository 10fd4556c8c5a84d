"""The environment and command of a job, as PBS's MoM would set them up."""

from __future__ import annotations

import os
from pathlib import Path

from pkbs.models import JobRecord
from pkbs.pbsvalues import job_ncpus
from pkbs.procs import RUN_ID_VARIABLE, run_id

PBS_ENVIRONMENT = "PBS_BATCH"


def build_env(
    record: JobRecord,
    job_dir: Path,
    tmp_dir: Path,
    nodefile: Path,
    endpoint: str | None,
    token: str | None,
    gpus: tuple[int, ...] | None = None,
) -> dict[str, str]:
    """`gpus`: the devices the job holds on a worker that has GPUs (CUDA_VISIBLE_DEVICES,
    empty for a job that asked none: it sees none)."""
    ncpus = str(job_ncpus(record.spec.resources))
    home = os.environ.get("HOME", str(job_dir))
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "USER": record.owner,
        "LOGNAME": record.owner,
        "SHELL": record.spec.shell or "/bin/bash",
        **{k: v for k, v in record.spec.variables.items() if k.isidentifier()},
        "PBS_O_WORKDIR": str(job_dir),
        "PBS_O_QUEUE": record.spec.queue,
        "PBS_JOBID": record.job_id,
        "PBS_JOBNAME": record.spec.name,
        "PBS_QUEUE": record.spec.queue,
        "PBS_ENVIRONMENT": PBS_ENVIRONMENT,
        "ENVIRONMENT": "BATCH",
        "PBS_JOBDIR": str(job_dir),
        "PBS_NODEFILE": str(nodefile),
        "PBS_NODENUM": "0",
        "PBS_TASKNUM": "1",
        "NCPUS": ncpus,
        "OMP_NUM_THREADS": record.spec.resources.get("ompthreads", ncpus),
        "TMPDIR": str(tmp_dir),
        # Names this run among all on the host (other stacks have jobs of the same id).
        RUN_ID_VARIABLE: run_id(record.run_token or ""),
    }
    if record.index is not None:
        env["PBS_ARRAY_INDEX"] = str(record.index)
        env["PBS_ARRAY_ID"] = record.array_id
    if "Account_Name" in record.spec.attributes:
        env["PBS_ACCOUNT"] = record.spec.attributes["Account_Name"]
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpus)
    if endpoint and token:
        env["PKBS_ENDPOINT"] = endpoint
        env["PKBS_TOKEN"] = token
    return env


def build_command(record: JobRecord, job_dir: Path, default_shell: str = "/bin/bash") -> list[str]:
    """Executables with a `#!` line run as themselves; other scripts go to the shell
    (-S, else `default_shell`)."""
    entry = job_dir / record.spec.entrypoint
    shell = record.spec.shell or default_shell
    if not entry.is_file():
        raise FileNotFoundError(f"the payload has no {record.spec.entrypoint!r} to run")
    if record.spec.kind == "stdin":
        return [shell, str(entry)]
    with open(entry, "rb") as fh:
        has_shebang = fh.read(2) == b"#!"
    if has_shebang and os.access(entry, os.X_OK):
        return [str(entry)]
    return [shell, str(entry)]
