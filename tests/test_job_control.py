"""Job control and the job's world through the real CLI: qsig, qsub -W block=true's exit
status, the job environment and -v/-V, nothing inherited from the worker, a shell that
cannot run, resources_used.mem, memory and walltime kills, empty directories at every
start (a workspace a daemon may still hold is not reused)."""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.stackutil import BIN, Stack, cli, fetch_results, job_number, poll, submit

EXIT_BADSTATE = 15016 & 0xFF  # PBSE_BADSTATE
EXIT_WALLTIME = -29  # JOB_EXEC_KILL_WALLTIME
EXIT_MEM = -27  # JOB_EXEC_KILL_MEM


def _gate(path: Path, timeout: int = 30) -> str:
    """A job script line that waits (at most `timeout` s) until `path` exists."""
    return f'for i in $(seq 1 {timeout * 20}); do [ -e "{path}" ] && break; sleep 0.05; done\n'


def _output(stack: Stack, job_id: str, name: str, dest: Path, kind: str = "o") -> str:
    fetch_results(stack, job_id, dest)
    return (dest / f"{name}.{kind}{job_number(job_id)}").read_text()


# -- qsig ---------------------------------------------------------------------------


def test_qsig_usr1_kills_a_plain_job(stack: Stack, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    job_id = submit(stack, "-N", "sigme", input=f'touch "{ready}"\nsleep 30\n')
    poll(ready.exists, 30, 0.05, "the job to start")
    result = cli(stack, "qsig", "-s", "USR1", job_id)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    job = stack.wait_state(job_id, "F", timeout=20)
    assert job["Exit_status"] == 256 + signal.SIGUSR1  # 266


def test_qsig_usr1_to_a_job_that_traps_it(stack: Stack, tmp_path: Path) -> None:
    ready, go, got = tmp_path / "ready", tmp_path / "go", tmp_path / "got"
    script = (
        f'trap \'echo got usr1; touch "{got}"\' USR1\ntouch "{ready}"\n' + _gate(go) + "echo done\n"
    )
    job_id = submit(stack, "-N", "trapper", input=script)
    poll(ready.exists, 30, 0.05, "the job to set its trap")
    try:
        result = cli(stack, "qsig", "-s", "SIGUSR1", job_id)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        poll(got.exists, 20, 0.05, "the trap to run")
        assert stack.job(job_id)["job_state"] == "R"
    finally:
        go.touch()
    job = stack.wait_state(job_id, "F", timeout=20)
    assert job["Exit_status"] == 0
    assert _output(stack, job_id, "trapper", tmp_path / "out") == "got usr1\ndone\n"


def test_qsig_refused_unless_running(stack: Stack) -> None:
    held = submit(stack, "-h", input="true\n")
    later = (datetime.now() + timedelta(hours=3)).strftime("%Y%m%d%H%M")
    waiting = submit(stack, "-a", later, input="true\n")
    try:
        for job_id in (held, waiting):
            result = cli(stack, "qsig", "-s", "USR1", job_id)
            assert (result.returncode, result.stdout, result.stderr) == (
                EXIT_BADSTATE,
                "",
                f"qsig: Request invalid for state of job {job_id}\n",
            )
    finally:
        cli(stack, "qdel", held, waiting)


# -- qsub -W block=true ---------------------------------------------------------------


@pytest.mark.parametrize("code", [7, 0])
def test_block_true_exits_with_the_job_exit_status(stack: Stack, code: int) -> None:
    result = cli(stack, "qsub", "-W", "block=true", input=f"exit {code}\n")
    assert (result.returncode, result.stderr) == (code, "")
    assert re.fullmatch(r"\d+\.pkbs\n", result.stdout), result.stdout
    job = stack.job(result.stdout.strip())
    assert (job["job_state"], job["Exit_status"]) == ("F", code)


def test_block_true_on_a_job_deleted_before_it_ran_exits_3(stack: Stack) -> None:
    proc = subprocess.Popen(
        [str(BIN / "qsub"), "-h", "-W", "block=true"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stack.env,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("true\n")
        proc.stdin.close()
        job_id = proc.stdout.readline().strip()
        assert re.fullmatch(r"\d+\.pkbs", job_id), job_id
        assert proc.poll() is None  # still waiting for the held job
        result = cli(stack, "qdel", job_id)
        assert result.returncode == 0, result.stderr
        assert proc.wait(timeout=30) == 3
        assert proc.stdout.read() == ""
        assert proc.stderr is not None
        assert proc.stderr.read() == f"qsub: {job_id} Job deleted before it ran\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the job's environment --------------------------------------------------------------


def _host_name() -> str:
    """This host as a job records it: its full name unless that is only `localhost`."""
    fqdn = socket.getfqdn()
    return socket.gethostname() if fqdn.startswith("localhost") else fqdn


def test_submit_host_login_name_and_euser_tell_the_truth(stack: Stack, tmp_path: Path) -> None:
    """PBS_O_HOST and Submit_Host name the same real host; PBS_O_LOGNAME comes from the
    password database when LOGNAME is unset; a token's user owns the job (Job_Owner)
    while euser names the account its processes really run as."""
    account = pwd.getpwuid(os.geteuid()).pw_name
    alice = {**stack.as_user("alice"), "LOGNAME": ""}  # empty: as if unset
    job_id = submit(stack, "-h", "-N", "who", input="id -un\n", cwd=tmp_path, env=alice)
    held = stack.job(job_id)
    host = _host_name()
    assert host != "localhost" or socket.gethostname() == "localhost"
    assert held["Submit_Host"] == held["Variable_List"]["PBS_O_HOST"] == host
    assert held["Variable_List"]["PBS_O_LOGNAME"] == account
    assert held["Job_Owner"] == f"alice@{host}"
    assert "euser" not in held  # not known before a worker runs it
    assert cli(stack, "qrls", job_id, env=alice).returncode == 0
    job = stack.wait_state(job_id, "F")
    assert (job["Exit_status"], job["euser"], job["Job_Owner"]) == (0, account, f"alice@{host}")
    assert _output(stack, job_id, "who", tmp_path / "out") == f"{account}\n"

ENV_SCRIPT = """\
env | grep -E '^(PBS_|NCPUS=|OMP_NUM_THREADS=|TMPDIR=|ENVIRONMENT=|A=|B=|C=|VFROM=)' | sort
echo "pwd=$(pwd)"
echo "nodefile_lines=$(wc -l < "$PBS_NODEFILE")"
echo "nodefile_hosts=$(sort -u "$PBS_NODEFILE" | tr '\\n' ' ')"
test -d "$TMPDIR" && echo x > "$TMPDIR/probe" && echo "tmpdir=writable"
"""


def _env_of(
    stack: Stack,
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[str, dict[str, str]]:
    job_id = submit(stack, "-N", "envjob", *args, input=ENV_SCRIPT, cwd=tmp_path, env=env)
    job = stack.wait_state(job_id, "F")
    assert job["Exit_status"] == 0, job
    text = _output(stack, job_id, "envjob", tmp_path / "out")
    values = dict(line.split("=", 1) for line in text.splitlines())
    return job_id, values


@pytest.mark.parametrize("resources", ["ncpus=2", "select=1:ncpus=2"])
def test_job_environment(stack: Stack, tmp_path: Path, resources: str) -> None:
    submit_env = {
        "HOME": str(tmp_path),
        "LOGNAME": "envtester",
        "SHELL": "/bin/bash",
        "PATH": f"{BIN}:/usr/bin:/bin",
    }
    job_id, env = _env_of(stack, tmp_path, "-l", resources, env=submit_env)
    assert env["PBS_ENVIRONMENT"] == "PBS_BATCH" and env["ENVIRONMENT"] == "BATCH"
    assert (env["PBS_JOBID"], env["PBS_JOBNAME"], env["PBS_QUEUE"]) == (job_id, "envjob", "workq")
    assert (env["NCPUS"], env["OMP_NUM_THREADS"]) == ("2", "2")
    assert env["nodefile_lines"] == "2"
    assert env["nodefile_hosts"] == socket.gethostname() + " "
    assert env["tmpdir"] == "writable"
    assert env["TMPDIR"] != env["pwd"] and env["TMPDIR"].startswith("/")
    # No shared file system: PBS_O_WORKDIR names the directory the job runs in.
    assert env["PBS_O_WORKDIR"] == env["pwd"] != str(tmp_path)
    assert env["PBS_O_HOME"] == str(tmp_path)
    assert env["PBS_O_LOGNAME"] == "envtester"
    assert env["PBS_O_PATH"] == f"{BIN}:/usr/bin:/bin"
    assert env["PBS_O_SHELL"] == "/bin/bash"
    assert env["PBS_O_HOST"] == _host_name()
    assert env["PBS_O_QUEUE"] == "workq"
    assert env["PBS_O_SYSTEM"] == os.uname().sysname
    assert "PBS_ARRAY_INDEX" not in env and "PBS_ARRAY_ID" not in env


def test_v_and_V_variables_reach_the_job(stack: Stack, tmp_path: Path) -> None:
    _, env = _env_of(stack, tmp_path, "-v", "A=1,B='x,y',C", env={"C": "from qsub"})
    assert (env["A"], env["B"], env["C"]) == ("1", "x,y", "from qsub")
    assert "VFROM" not in env
    _, env = _env_of(stack, tmp_path, "-V", env={"VFROM": "exported", "PBS_O_HOME": "/bogus"})
    assert env["VFROM"] == "exported"
    assert env["PBS_O_HOME"] != "/bogus"  # user-supplied PBS_O_* are dropped


def test_job_inherits_no_descriptor_and_default_signals(stack: Stack, tmp_path: Path) -> None:
    """What the worker holds (its NATS connection, pidfds, logs) never reaches a job, and
    the job's programs start with no signal blocked and SIGPIPE / SIGXFSZ not ignored
    (Python, which the worker is, ignores both)."""
    script = "ls /proc/self/fd\ngrep -E '^Sig(Blk|Ign)' /proc/self/status\n"
    job_id = submit(stack, "-N", "inherit", input=script)
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    lines = _output(stack, job_id, "inherit", tmp_path / "out").split()
    fds = {int(word) for word in lines[: lines.index("SigBlk:")]}
    assert fds == {0, 1, 2, 3}, lines  # 3: the directory ls reads
    masks = dict(zip(lines[-4::2], (int(v, 16) for v in lines[-3::2]), strict=True))
    assert masks["SigBlk:"] == 0, lines
    sigpipe, sigxfsz = 1 << (signal.SIGPIPE - 1), 1 << (signal.SIGXFSZ - 1)
    assert masks["SigIgn:"] & (sigpipe | sigxfsz) == 0, lines


@pytest.mark.parametrize(
    ("shell", "why"),
    [
        ("/nonexistent/sh", "[Errno 2] No such file or directory"),
        ("{tmp}/not-executable", "[Errno 13] Permission denied"),
        ("{tmp}/not-a-program", "[Errno 8] Exec format error"),
    ],
)
def test_a_shell_that_cannot_run_ends_the_job(
    stack: Stack, tmp_path: Path, shell: str, why: str
) -> None:
    """Not a retry for ever: the job ends with PBS's JOB_EXEC_FAIL1 and says why."""
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    (tmp_path / "not-a-program").write_bytes(b"\0\1\2")
    (tmp_path / "not-a-program").chmod(0o755)
    shell = shell.format(tmp=tmp_path)
    job_id = submit(stack, "-S", shell, input="true\n")
    job = stack.wait_state(job_id, "F")
    assert (job["Exit_status"], job["run_count"]) == (-1, 1)
    assert job["comment"] == f"Job could not start: {why}: '{shell}'"


# -- resources_used.mem -----------------------------------------------------------------


def _mem_kb(job: dict[str, object]) -> int:
    used = job["resources_used"]
    assert isinstance(used, dict)
    return int(str(used["mem"]).removesuffix("kb"))


def test_resources_used_mem_is_the_jobs_own(stack: Stack) -> None:
    """A child's ru_maxrss counts the worker's memory it was forked from: a trivial job
    must not report the worker's ~60 MB. A job that holds 40 MB (less than the worker)
    for three seconds is sampled; one of 150 MB is above the worker and ru_maxrss says so."""
    hold = "python3 -c \"import time; b = b'x' * ({mib} << 20); time.sleep({s})\"\n"
    trivial = submit(stack, "-N", "trivial", input="true\n")
    held = submit(stack, "-N", "held", input=hold.format(mib=40, s=3))
    big = submit(stack, "-N", "big", input=hold.format(mib=150, s=0))
    assert _mem_kb(stack.wait_state(trivial, "F")) < 20 * 1024
    assert 40 * 1024 <= _mem_kb(stack.wait_state(held, "F")) < 150 * 1024
    assert _mem_kb(stack.wait_state(big, "F")) >= 150 * 1024


def test_memory_overrun_is_killed(stack: Stack, tmp_path: Path) -> None:
    script = "#PBS -l mem=30mb\necho started\n" + (
        "python3 -c \"import time; b = b'x' * (100 << 20); time.sleep(30)\"\n"
    )
    job_id = submit(stack, "-N", "hog", input=script)
    job = stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == EXIT_MEM
    assert _mem_kb(job) > 30 * 1024
    err = _output(stack, job_id, "hog", tmp_path / "out", "e")
    assert re.fullmatch(r"=>> PBS: job killed: mem \d+kb exceeded limit 30720kb\n", err), err


# -- walltime ---------------------------------------------------------------------------


def test_walltime_overrun_is_killed(stack: Stack, tmp_path: Path) -> None:
    job_id = submit(
        stack, "-N", "overrun", input="#PBS -l walltime=00:00:02\necho started\nsleep 30\n"
    )
    job = stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == EXIT_WALLTIME
    assert job["Resource_List"]["walltime"] == "00:00:02"
    err = _output(stack, job_id, "overrun", tmp_path / "out", "e")
    assert re.fullmatch(r"=>> PBS: job killed: walltime \d+ exceeded limit 2\n", err), err
    assert (tmp_path / "out" / f"overrun.o{job_number(job_id)}").read_text() == "started\n"


def test_each_job_starts_in_empty_directories(fresh_stack: Stack, tmp_path: Path) -> None:
    """Workspaces are reused (worker/rundir.py): what a job leaves in its directory and
    TMPDIR is gone when a later job starts there, and a workspace left with a
    subdirectory is not used again."""
    fresh_stack.up(workers=1, slots=1)
    look = 'echo "$PWD $TMPDIR"; ls -A . "$TMPDIR"; echo old > left.txt; echo x > "$TMPDIR/t"\n'
    litter = look + 'mkdir sub "$TMPDIR/sub"; echo old > sub/deep.txt; chmod 500 sub\n'
    scripts = [look] * 8 + [litter] + [look] * 4
    jobs = [fresh_stack.qsub("-N", f"ws{k}", input=script) for k, script in enumerate(scripts)]
    dirs = []
    for k, job_id in enumerate(jobs):
        assert fresh_stack.wait_state(job_id, "F")["Exit_status"] == 0
        fetch_results(fresh_stack, job_id, tmp_path / str(k))
        out = (tmp_path / str(k) / f"ws{k}.o{job_number(job_id)}").read_text()
        first, *listing = out.splitlines()
        # ls of the job directory and of TMPDIR: the job's script, nothing else.
        assert [line for line in listing if not line.endswith(":")] == ["STDIN", ""], out
        dirs.append(first)
    assert len(set(dirs[:8])) < 8, dirs  # reused
    assert dirs[8] not in dirs[9:], dirs  # not after a subdirectory was left in it


def test_a_workspace_a_daemon_may_hold_is_not_reused(fresh_stack: Stack, tmp_path: Path) -> None:
    """A job leaves a daemon while another job runs on the worker (the daemon lives
    until that job ends, see worker/runner.py end_strays): its workspace may still be
    in the daemon's hands, so the next job does not get it."""
    fresh_stack.up(workers=1, slots=2)
    gate = tmp_path / "gate"
    long = fresh_stack.qsub(input=f"while [ ! -e {gate} ]; do sleep 0.05; done\n")
    fresh_stack.wait_state(long, "R")
    # Without PBS_JOBID it is known only by its age (a job that cleared it): it
    # outlives its job while the long one runs. (With PBS_JOBID it is ended at once.)
    # The job ends only once the daemon is in its own session, out of the job's group.
    detached = tmp_path / "detached"
    daemon_script = (
        f'echo "$PWD"; env -u PBS_JOBID setsid sh -c "touch {detached}; exec sleep 60"'
        " </dev/null >/dev/null 2>&1 &\n" + _gate(detached)
    )
    jobs = {"daemon": fresh_stack.qsub("-N", "daemon", input=daemon_script)}
    fresh_stack.wait_state(jobs["daemon"], "F")
    jobs["next"] = fresh_stack.qsub("-N", "next", input='echo "$PWD"\n')
    fresh_stack.wait_state(jobs["next"], "F")
    gate.write_text("go")
    fresh_stack.wait_state(long, "F")
    pwd = {}
    for name, job_id in jobs.items():
        fetch_results(fresh_stack, job_id, tmp_path / name)
        pwd[name] = (tmp_path / name / f"{name}.o{job_number(job_id)}").read_text()
    assert pwd["daemon"] != pwd["next"], pwd
