"""qstat through the real CLI prints PBS's exact texts: the default table (finished,
held, running jobs), -f and -F json, -x, unknown ids, a user with no jobs, -B -f and
`@server` as Nextflow asks them, and -Q's header."""

from __future__ import annotations

import getpass
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stackutil import BIN, CTIME_RE, Stack, cli, job_number, submit, wait_state_as

HEADER = (
    "Job id            Name             User              Time Use S Queue\n"
    "----------------  ---------------- ----------------  -------- - -----\n"
)
FULL_KEYS = (
    "Job_Name", "Job_Owner", "job_state", "queue", "ctime", "qtime", "stime", "mtime",
    "exec_host", "Exit_status", "Output_Path", "Error_Path", "resources_used.walltime",
)


def _row(job_id: str, name: str, user: str, time_use: str, state: str, queue: str) -> str:
    # The row printf of qstat.c, verbatim (PBS.md section 1).
    row = "%-17s %-16s %-16s  %8s %1s %-16s\n"
    return row % (job_id, name, user, time_use, state, queue)  # noqa: UP031


@pytest.fixture(scope="module")
def finished(stack: Stack) -> str:
    """One finished job of the session user, shared by the read-only tests."""
    job_id = submit(stack, "-N", "qstatdone", input="echo done\n")
    stack.wait_state(job_id, "F")
    return job_id


@pytest.fixture
def held(stack: Stack) -> Iterator[str]:
    job_id = submit(stack, "-h", "-N", "qstatheld", input="echo never\n")
    yield job_id
    cli(stack, "qdel", job_id)


def test_default_table_of_finished_job(stack: Stack, finished: str) -> None:
    result = cli(stack, "qstat", "-x", finished)
    assert (result.returncode, result.stderr) == (0, "")
    cput = stack.job(finished)["resources_used"]["cput"]
    assert re.fullmatch(r"\d\d:\d\d:\d\d", cput)
    assert result.stdout == HEADER + _row(finished, "qstatdone", getpass.getuser(), cput, "F",
                                          "workq")


def test_default_table_of_held_job(stack: Stack, held: str) -> None:
    # No resources_used.cput yet: Time Use prints 0 (qstat.c L1657).
    result = cli(stack, "qstat", held)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == HEADER + _row(held, "qstatheld", getpass.getuser(), "0", "H", "workq")


def test_qstat_of_running_job(stack: Stack) -> None:
    job_id = submit(stack, "-N", "qstatrun", input="sleep 30\n")
    try:
        stack.wait_state(job_id, "R")
        result = cli(stack, "qstat", job_id)
        cput = stack.job(job_id).get("resources_used", {}).get("cput", "0")
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == HEADER + _row(job_id, "qstatrun", getpass.getuser(), cput, "R",
                                              "workq")
    finally:
        assert cli(stack, "qdel", job_id).returncode == 0
    stack.wait_state(job_id, "F")


def test_full_format_has_the_issue_keys(stack: Stack, finished: str) -> None:
    result = cli(stack, "qstat", "-x", "-f", finished)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.split("\n")
    assert lines[0] == f"Job Id: {finished}"
    assert result.stdout.endswith("\n\n")  # a blank line follows each job
    values: dict[str, str] = {}
    for line in lines[1:]:
        m = re.fullmatch(r"    (\S+) = (.*)", line)
        if m:
            values[m.group(1)] = m.group(2)
        elif line.startswith("\t"):  # a long value goes on (a folded path, a list)
            values[list(values)[-1]] += line[1:]
        else:
            assert line == "", repr(line)
    missing = [k for k in FULL_KEYS if k not in values]
    assert not missing, result.stdout
    seq = job_number(finished)
    user = getpass.getuser()
    assert values["Job_Name"] == "qstatdone"
    assert values["Job_Owner"].startswith(f"{user}@")
    assert (values["job_state"], values["queue"], values["Exit_status"]) == ("F", "workq", "0")
    for key in ("ctime", "qtime", "stime", "mtime"):
        assert re.fullmatch(CTIME_RE, values[key]), (key, values[key])
    assert re.fullmatch(r"[^/\s]+/0(\*1)?", values["exec_host"]), values["exec_host"]
    assert values["Output_Path"].endswith(f"/qstatdone.o{seq}")
    assert values["Error_Path"].endswith(f"/qstatdone.e{seq}")
    assert re.fullmatch(r"\d\d:\d\d:\d\d", values["resources_used.walltime"])
    order = [k for k in values if k in FULL_KEYS]
    assert order.index("Job_Name") < order.index("job_state") < order.index("Exit_status")


def test_finished_jobs_only_with_x(stack: Stack) -> None:
    env = stack.as_user("qstatx")
    job_id = submit(stack, "-N", "xjob", input="true\n", env=env)
    job = wait_state_as(stack, job_id, "F", env)
    plain = cli(stack, "qstat", env=env)
    assert (plain.returncode, plain.stdout, plain.stderr) == (0, "", "")
    history = cli(stack, "qstat", "-x", env=env)
    assert (history.returncode, history.stderr) == (0, "")
    cput = job["resources_used"]["cput"]
    assert history.stdout == HEADER + _row(job_id, "xjob", "qstatx", cput, "F", "workq")


def test_unknown_job_id(stack: Stack) -> None:
    result = cli(stack, "qstat", "99999.pkbs")
    assert (result.returncode, result.stdout) == (153, "")
    assert result.stderr == "qstat: Unknown Job Id 99999.pkbs\n"


def test_finished_job_without_x(stack: Stack, finished: str) -> None:
    result = cli(stack, "qstat", finished)
    assert (result.returncode, result.stdout) == (35, "")
    assert result.stderr == (
        f"qstat: {finished} Job has finished, use -x or -H to obtain historical job information\n"
    )


def test_json_full_format(stack: Stack, finished: str) -> None:
    result = cli(stack, "qstat", "-f", "-F", "json", "-x", finished)
    assert (result.returncode, result.stderr) == (0, "")
    data = json.loads(result.stdout)
    assert data["pbs_server"] == "pkbs"
    assert isinstance(data["timestamp"], int)
    job = data["Jobs"][finished]
    assert (job["job_state"], job["Exit_status"], job["Job_Name"]) == ("F", 0, "qstatdone")
    assert re.fullmatch(CTIME_RE, job["stime"])


def test_user_without_jobs_sees_nothing(stack: Stack, finished: str) -> None:
    env = stack.as_user("nobody1")
    for args in ((), ("-x",)):
        result = cli(stack, "qstat", *args, env=env)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    as_json = cli(stack, "qstat", "-f", "-F", "json", "-x", env=env)
    assert as_json.returncode == 0
    assert "Jobs" not in json.loads(as_json.stdout)  # absent when no job matched


def test_server_view_and_all_jobs_for_nextflow(stack: Stack, held: str) -> None:
    server = cli(stack, "qstat", "-B", "-f")
    assert (server.returncode, server.stderr) == (0, "")
    assert server.stdout.startswith("Server: pkbs\n")
    everything = cli(stack, "qstat", "-f", "@pkbs")
    assert (everything.returncode, everything.stderr) == (0, "")
    assert f"Job Id: {held}\n" in everything.stdout
    # Nextflow's PBS Pro status command, verbatim (PBS.md §5).
    command = ("set -o pipefail; qstat -f $( qstat -B -f | awk -v ORS=' ' "
               "'$1 == \"Server:\" {print \"@\"$2}' ) | "
               "{ grep -E '(Job Id:|job_state =)' || true; }")
    nextflow = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                              env={**stack.env, "PATH": f"{BIN}:/usr/bin:/bin"}, timeout=30)
    assert nextflow.returncode == 0, nextflow.stderr
    lines = nextflow.stdout.splitlines()
    at = lines.index(f"Job Id: {held}")
    assert lines[at + 1] == "    job_state = H"


def test_queue_view_header(stack: Stack) -> None:
    result = cli(stack, "qstat", "-Q")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type",
        "---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----",
    ]
    assert lines[2].split()[0] == "workq"


def _alternate_ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The Job ID column of qstat's alternate table (-a -i -r ...), -n lines skipped."""
    assert (result.returncode, result.stderr) == (0, ""), result
    lines = result.stdout.splitlines()
    rules = [k for k, line in enumerate(lines) if line.startswith("-----")]
    if not rules:
        assert result.stdout == "", result.stdout
        return []
    return [line.split()[0] for line in lines[rules[0] + 1 :] if line and line[0] != " "]


def test_i_selects_waiting_jobs_and_r_running_ones(stack: Stack, tmp_path: Path) -> None:
    """-i: states E H Q T W; -r: R and S (qstat.c); with -u, -x, -t, -J, -n."""
    from datetime import datetime, timedelta

    user = stack.as_user("selector")
    gate = tmp_path / "gate"
    gated = f'until [ -e "{gate}" ]; do sleep 0.05; done\n'
    later = (datetime.now() + timedelta(hours=3)).strftime("%Y%m%d%H%M")
    done = submit(stack, input="true\n", env=user)
    jobs = {
        "running": submit(stack, input=gated, env=user),
        "suspended": submit(stack, input=gated, env=user),
        "held": submit(stack, "-h", input="true\n", env=user),
        "waiting": submit(stack, "-a", later, input="true\n", env=user),
        "array": cli(stack, "qsub", "-J", "1-2", input=gated, env=user).stdout.strip(),
        "held_array": cli(stack, "qsub", "-h", "-J", "1-2", input="true\n", env=user)
        .stdout.strip(),
    }
    number = jobs["array"].split("[")[0]
    try:
        wait_state_as(stack, done, "F", user)
        for name in ("running", "suspended"):
            wait_state_as(stack, jobs[name], "R", user)
        wait_state_as(stack, f"{number}[].pkbs", "B", user)
        assert cli(stack, "qsig", "-s", "suspend", jobs["suspended"]).returncode == 0
        sub = [f"{number}[1].pkbs", f"{number}[2].pkbs"]
        for subjob in sub:
            wait_state_as(stack, subjob, "R", user)
        queued = [jobs["held"], jobs["waiting"], jobs["held_array"]]
        running = [jobs["running"], jobs["suspended"]]
        as_user = {"env": user}
        assert _alternate_ids(cli(stack, "qstat", "-i", **as_user)) == queued
        assert _alternate_ids(cli(stack, "qstat", "-i", "-u", "selector")) == queued
        assert _alternate_ids(cli(stack, "qstat", "-i", "-x", **as_user)) == queued
        assert _alternate_ids(cli(stack, "qstat", "-i", "-J", **as_user)) == [jobs["held_array"]]
        assert _alternate_ids(cli(stack, "qstat", "-r", **as_user)) == running
        assert _alternate_ids(cli(stack, "qstat", "-r", "-u", "selector")) == running
        assert _alternate_ids(cli(stack, "qstat", "-r", "-t", **as_user)) == running + sub
        assert _alternate_ids(cli(stack, "qstat", "-r", "-n", "-1", **as_user)) == running
        assert _alternate_ids(cli(stack, "qstat", "-r", "-J", **as_user)) == []
        assert _alternate_ids(cli(stack, "qstat", "-i", "-u", "nobody")) == []
        conflict = cli(stack, "qstat", "-i", "-r")
        assert (conflict.returncode, conflict.stdout) == (2, "")
        assert conflict.stderr.startswith("qstat: conflicting options.\nusage:"), conflict.stderr
    finally:
        gate.touch()
        cli(stack, "qdel", *[j for j in jobs.values() if j])
