"""Real faults injected into the real processes of a local stack (`pkbs up`).

Each test kills, stops or starves one process of its own stack while jobs run, then
audits the batch (tests.stackutil.audit_jobs): every submitted job is F with the
expected Exit_status, its results are on WebDAV, its runs are counted and no two
runs of one job overlapped. Fault durations use a timer; everything else polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.aio.msg import Msg
from pkbs.worker import metrics as worker_metrics
from pkbs.worker.fetch import open_work_source
from pkbs.worker.service import Worker

from pkbs import lifecycle
from pkbs.jobstore import JobStore
from pkbs.models import WorkItem
from pkbs.queues import QueueConfig
from tests.apiutil import call, submit_body
from tests.stackutil import (
    BIN,
    Stack,
    api_endpoint,
    audit_jobs,
    job_runs,
    logged_job,
    pid_gone,
    poll,
    process_healthy,
    process_start,
    results_dir,
    start_worker,
    stop_worker,
    store_settings,
    wait_restarted,
    worker_dir_running,
)

pytestmark = pytest.mark.timeout(150)  # each step has its own deadline below


def report(row: str) -> None:
    """One row of the fault table (shown with `pytest -rA` or `-s`)."""
    print(f"FAULT {row}")


def submit_api(stack: Stack, script: str, name: str = "fault",
               submit_id: str | None = None) -> str:
    endpoint, token = api_endpoint(stack)
    status, body = call(endpoint, "POST", "/v1/jobs", token, submit_body(script, name, submit_id))
    assert status == 201, body
    return str(body["job_id"])


def submit_batch(stack: Stack, script: str, count: int, name: str = "fault") -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: submit_api(stack, script, name), range(count)))


def try_post(endpoint: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    """One POST /v1/jobs; a dead dispatcher gives (0, reason) instead of raising."""
    try:
        return call(endpoint, "POST", "/v1/jobs", token, body)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return 0, repr(exc)


def worker_dir(stack: Stack, index: int) -> Path:
    return stack.home / "jobs" / "pkbs-jobs" / f"{os.uname().nodename}-w{index}"


def running_here(stack: Stack, index: int) -> bool:
    """worker-<index> is alive and runs a job it started itself (not a leftover of
    the incarnation killed before: a restarted worker clears those)."""
    try:
        pid = stack.pid_of(f"worker-{index}")
        born = process_start(pid)
        return any(d.stat().st_mtime >= born for d in worker_dir(stack, index).iterdir())
    except (OSError, KeyError, IndexError):
        return False


def started_count(log: Path) -> int:
    return len(job_runs(log))


# -- 1. worker SIGKILL -----------------------------------------------------------


def test_worker_sigkill_during_a_batch(fresh_stack: Stack, tmp_path: Path) -> None:
    """Workers are SIGKILLed four times while 200 short jobs run: every job finishes once
    recorded, the killed runs are rerun (run_count >= 2), none overlaps its rerun."""
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=2, slots=2)
    log = tmp_path / "runs.log"
    ids = submit_batch(fresh_stack, logged_job(log, ticks=3, tick=0.1), 200, "wkill")
    kills = 0
    for index in (1, 2, 1, 2):
        if started_count(log) >= len(ids):
            break
        poll(lambda i=index: running_here(fresh_stack, i), 30, 0.05, f"worker-{index} busy")
        victim = fresh_stack.pid_of(f"worker-{index}")
        os.kill(victim, signal.SIGKILL)
        kills += 1
        wait_restarted(fresh_stack, f"worker-{index}", victim)
    audit = audit_jobs(fresh_stack, ids, log, timeout=60)
    report(audit.row(f"worker SIGKILL x{kills}"))
    audit.check()
    assert kills >= 3, "the batch ended before the workers could be killed"
    assert audit.reruns >= 1, "no killed run was rerun"


def test_lost_run_s_message_given_back_as_a_copy_still_reruns(fresh_stack: Stack) -> None:
    """A run's worker is lost, and the redelivered work message reaches a worker that
    gives it back untouched (a copy in the queue: it was draining, or had no room).
    The copy stands for the original: the next worker reruns the job, which would
    otherwise stay R for good (the copy's own sequence is not the one its record names)."""
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=0, slots=1)
    job_id = fresh_stack.qsub("-N", "given-back", input="echo done\n")
    settings = store_settings(fresh_stack)

    async def lose_the_run_then_give_it_back() -> None:
        store = await JobStore.open(settings, "fault-test")
        source = await open_work_source(store.nc, {"workq": QueueConfig()})
        try:
            async def next_message() -> Msg:
                for _ in range(40):  # up to ~40 s: the redelivery comes after ack_wait
                    with contextlib.suppress(nats.errors.TimeoutError):
                        if msgs := await source.fetch(1, 1.0):
                            return msgs[0]
                raise AssertionError("no work message delivered")

            first = await next_message()
            number = WorkItem.model_validate_json(first.data).number
            run = lifecycle.RunStart("lost-run", first.metadata.sequence.stream, "gone",
                                     "elsewhere/0*1")
            await store.cas(number, lambda r: lifecycle.started(r, run, time.time()))
            again = await next_message()  # not acked: it comes back after ack_wait
            assert again.metadata.num_delivered == 2
            giver = Worker(settings)
            giver.store = store
            given_back = worker_metrics.GIVEN_BACK._value.get()
            await giver._return_untouched(again)
            assert worker_metrics.GIVEN_BACK._value.get() == given_back + 1
        finally:
            await source.finish()
            await store.close()

    asyncio.run(lose_the_run_then_give_it_back())
    assert fresh_stack.job(job_id)["job_state"] == "R"
    worker = start_worker(fresh_stack, "rescuer")
    try:
        done = fresh_stack.wait_state(job_id, "F", timeout=60)
    finally:
        stop_worker(worker)
    assert done["Exit_status"] == 0 and done["run_count"] == 2, done


def _worker_of(stack: Stack, job_id: str, workers: int) -> int:
    """Which worker-<index> runs the job, once its process runs."""
    running = poll(lambda: worker_dir_running(stack, job_id), 10, what=f"{job_id}'s process")
    for index in range(1, workers + 1):
        if running == worker_dir(stack, index).resolve():
            return index
    raise AssertionError(f"no worker runs {job_id}")


def test_worker_dead_for_longer_than_ack_wait_no_overlap(fresh_stack: Stack,
                                                          tmp_path: Path) -> None:
    """A worker is SIGKILLed while its supervisor is stalled (SIGSTOP, 4 s): the job is
    rerun on the other worker after ack_wait, and the orphaned first run must not
    still be running then (the restarting worker, on the same host, ends it)."""
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=2, slots=1)
    log = tmp_path / "runs.log"
    job_id = submit_api(fresh_stack, logged_job(log, ticks=50, tick=0.1), "orphan")
    poll(lambda: started_count(log) >= 1, 30, 0.05, "the job to start")
    index = _worker_of(fresh_stack, job_id, 2)
    supervisor = int(fresh_stack.state()["supervisor_pid"])
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(fresh_stack.pid_of(f"worker-{index}"), signal.SIGKILL)
        time.sleep(4)  # the stall: longer than ack_wait (2 s)
    finally:
        os.kill(supervisor, signal.SIGCONT)
    audit = audit_jobs(fresh_stack, [job_id], log, timeout=40)
    report(audit.row("worker SIGKILL with the supervisor stalled 4 s"))
    audit.check()


def test_stalled_worker_stores_nothing_over_the_rerun(fresh_stack: Stack,
                                                       tmp_path: Path) -> None:
    """A worker stalls (SIGSTOP: its heartbeats stop) while its job runs: the job is
    rerun on the other worker after ack_wait and finishes; when the stalled worker
    resumes, its stale run stores neither results nor an end. The .o on WebDAV is the
    rerun's (the stale run had written a first line to it)."""
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=2, slots=1)
    log = tmp_path / "runs.log"
    script = logged_job(log, ticks=20, tick=0.1).replace(
        "for i in", 'echo "begin $PBS_JOBID $$"\nfor i in', 1)
    job_id = submit_api(fresh_stack, script, "stall")
    poll(lambda: started_count(log) >= 1, 30, 0.05, "the job to start")
    index = _worker_of(fresh_stack, job_id, 2)
    victim = fresh_stack.pid_of(f"worker-{index}")
    os.kill(victim, signal.SIGSTOP)
    try:
        final = fresh_stack.wait_state(job_id, "F", timeout=40)
    finally:
        os.kill(victim, signal.SIGCONT)
    assert final["run_count"] == 2, final
    # The resumed worker finds its lease gone and drops the run: wait until it says so.
    worker_log = fresh_stack.home / "logs" / f"worker-{index}.log"
    poll(lambda: "superseded while this worker was stalled" in worker_log.read_text(), 20,
         0.05, "the stalled worker to let go of its run")
    probe = submit_api(fresh_stack, logged_job(log, ticks=1), "probe")
    audit = audit_jobs(fresh_stack, [job_id, probe], log, timeout=40)
    report(audit.row("worker SIGSTOP past ack_wait"))
    audit.check()


# -- 2. nats-server SIGKILL --------------------------------------------------------


def test_nats_sigkill_while_running_and_submitting(fresh_stack: Stack, tmp_path: Path) -> None:
    """nats-server is SIGKILLed twice (the supervisor restarts it on the same port and
    store) while jobs run and qsub keeps submitting: each qsub either printed an id
    (and that job completes) or failed with a one-line message and a non-zero exit."""
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=2, slots=2)
    log = tmp_path / "runs.log"
    script = tmp_path / "job.sh"
    script.write_text(logged_job(log, ticks=5, tick=0.1))
    script.chmod(0o755)
    ids = submit_batch(fresh_stack, script.read_text(), 12, "natsrun")
    attempts: list[subprocess.CompletedProcess[str]] = []
    stop = threading.Event()

    def submitter() -> None:
        while not stop.is_set():
            attempts.append(fresh_stack.run(str(BIN / "qsub"), "-N", "natssub", str(script),
                                            timeout=60))

    thread = threading.Thread(target=submitter, daemon=True)
    thread.start()
    try:
        for round_ in range(2):
            poll(lambda r=round_: len(attempts) >= 3 * (r + 1) and started_count(log) > 0, 30,
                 0.05, "submissions and running jobs")
            victim = fresh_stack.pid_of("nats-server")
            os.kill(victim, signal.SIGKILL)
            wait_restarted(fresh_stack, "nats-server", victim)
            poll(lambda: process_healthy(fresh_stack, "nats-server"), 30, 0.1, "nats healthy")
        seen = len(attempts)
        poll(lambda: len(attempts) >= seen + 3, 40, 0.05, "submissions after the restarts")
    finally:
        stop.set()
        thread.join(70)
    printed, failed = [], []
    for result in attempts:
        if result.returncode == 0:
            assert result.stdout.strip().endswith(".pkbs"), result
            printed.append(result.stdout.strip())
        else:
            failed.append(result)
            assert result.stderr.startswith("qsub: "), result.stderr
            assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, \
                result.stderr
    audit = audit_jobs(fresh_stack, ids + printed, log, timeout=60, exact=not failed)
    first = f": {failed[0].stderr.strip()[:100]}" if failed else ""
    report(audit.row(f"nats-server SIGKILL x2 ({len(failed)} qsub failed cleanly{first})"))
    audit.check()


# -- 3. WebDAV outage ---------------------------------------------------------------


def test_webdav_stopped_while_jobs_finish(fresh_stack: Stack, tmp_path: Path) -> None:
    """WebDAV is SIGSTOPped for 8 s while jobs end: their uploads wait, and every job
    ends F with its results stored once WebDAV is back."""
    fresh_stack.up(workers=2, slots=2)
    log = tmp_path / "runs.log"
    ids = submit_batch(fresh_stack, logged_job(log, ticks=10, tick=0.1), 8, "davstop")
    dav = fresh_stack.pid_of("webdav")
    poll(lambda: started_count(log) >= 2, 30, 0.05, "jobs to start")
    os.kill(dav, signal.SIGSTOP)
    try:
        stopped_at = time.time()
        time.sleep(8)  # the outage itself
        ended_during = [
            job for job, spans in job_runs(log).items()
            if any(s.ended and s.last > stopped_at for s in spans)
        ]
        finished_during = [
            j for j in ended_during if fresh_stack.job(j)["job_state"] == "F"
        ]
    finally:
        os.kill(dav, signal.SIGCONT)
    assert ended_during, "no job ended while WebDAV was stopped"
    assert not finished_during, f"recorded F without stored results: {finished_during}"
    audit = audit_jobs(fresh_stack, ids, log, timeout=60)
    report(audit.row("WebDAV SIGSTOP 8 s"))
    audit.check()


def test_webdav_killed_and_restarted(fresh_stack: Stack, tmp_path: Path) -> None:
    """WebDAV is SIGKILLed (the supervisor restarts it): uploads retry with backoff."""
    fresh_stack.up(workers=2, slots=2)
    log = tmp_path / "runs.log"
    ids = submit_batch(fresh_stack, logged_job(log, ticks=5, tick=0.1), 12, "davkill")
    poll(lambda: started_count(log) >= 2, 30, 0.05, "jobs to start")
    for _ in range(2):
        victim = fresh_stack.pid_of("webdav")
        os.kill(victim, signal.SIGKILL)
        wait_restarted(fresh_stack, "webdav", victim)
    audit = audit_jobs(fresh_stack, ids, log, timeout=60)
    report(audit.row("WebDAV SIGKILL x2"))
    audit.check()


OUTAGE = 30.0  # seconds WebDAV stays down in the long-outage test


@contextlib.contextmanager
def webdav_down(stack: Stack, how: str = "killed") -> Iterator[None]:
    """WebDAV unreachable until the block ends: SIGKILLed while the supervisor is
    stopped (so nothing restarts it; refused connections), then restarted on the same
    port; or SIGSTOPped (connections hang), then SIGCONTinued."""
    victim = stack.pid_of("webdav")
    if how == "stopped":
        os.kill(victim, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(victim, signal.SIGCONT)
        return
    supervisor = int(stack.state()["supervisor_pid"])
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(victim, signal.SIGKILL)
        yield
    finally:
        os.kill(supervisor, signal.SIGCONT)
    wait_restarted(stack, "webdav", victim)


@pytest.mark.timeout(150)
def test_webdav_down_30s_while_jobs_finish(fresh_stack: Stack, tmp_path: Path) -> None:
    """WebDAV is killed and stays down 30 s (then restarted on the same port) while 8
    jobs end: their results wait on the workers, uploads are retried with backoff, no
    job is recorded F meanwhile, and afterwards every job is F with its results stored,
    at its first run (spooled, not rerun)."""
    fresh_stack.up(workers=2, slots=2)
    log = tmp_path / "runs.log"
    ids = submit_batch(fresh_stack, logged_job(log, ticks=10, tick=0.1), 8, "davdown")
    poll(lambda: started_count(log) >= 2, 30, 0.05, "jobs to start")
    with webdav_down(fresh_stack):
        down_at = time.time()
        time.sleep(OUTAGE)  # the outage itself
        ended_during = [
            job for job, spans in job_runs(log).items()
            if any(s.ended and s.last > down_at for s in spans)
        ]
        finished_during = [j for j in ids if fresh_stack.job(j)["job_state"] == "F"]
    assert len(ended_during) >= 6, f"only {ended_during} ended while WebDAV was down"
    assert not finished_during, f"recorded F without stored results: {finished_during}"
    audit = audit_jobs(fresh_stack, ids, log, timeout=60)
    report(audit.row(f"WebDAV down {OUTAGE:.0f} s (killed, restarted on its port)"))
    audit.check()
    assert audit.reruns == 0, "a job ran again instead of waiting for its upload"


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_webdav_down_past_the_limit_fails_the_job_clearly(fresh_stack: Stack, tmp_path: Path,
                                                          how: str) -> None:
    """WebDAV stays down past PKBS_RESULTS_RETRY_SECONDS (3 s here): the job ends F at
    its first run with Exit_status -2 (PBS JOB_EXEC_FAIL2: failed after the job ran)
    and a comment saying what happened, shown by qstat -f; its files are kept on the
    worker (PBS's "undelivered"), nothing is rerun; the next job succeeds again."""
    fresh_stack.extra_env["PKBS_RESULTS_RETRY_SECONDS"] = "3"
    fresh_stack.up(workers=1, slots=2)
    log = tmp_path / "runs.log"
    script = logged_job(log, ticks=1).replace("exit 0", "echo kept > data.txt\nexit 0")
    with webdav_down(fresh_stack, how):
        job_id = submit_api(fresh_stack, script, "davlimit")
        job = fresh_stack.wait_state(job_id, "F", timeout=30)
    assert job["Exit_status"] == -2 and job["run_count"] == 1, job
    comment = str(job.get("comment"))
    assert comment.startswith("Results not stored: WebDAV at http://127.0.0.1:"), comment
    assert "unreachable for 3 s (limit PKBS_RESULTS_RETRY_SECONDS=3)" in comment, comment
    assert ("ConnectError" if how == "killed" else "no answer") in comment, comment
    assert "The job itself exited 0" in comment, comment
    assert "result files are kept on worker " in comment, comment  # .o, .e, data.txt
    kept = Path(comment.rsplit(" in ", 1)[1])
    out = kept / str(job["Output_Path"]).rsplit("/", 1)[-1]
    assert f"out {job_id}" in out.read_text() and (kept / "data.txt").read_text() == "kept\n"
    text = fresh_stack.run(str(BIN / "qstat"), "-f", "-x", job_id).stdout
    assert "Exit_status = -2" in text and "comment = Results not stored: WebDAV" in text, text
    # WebDAV is back: the failed job stays as it is (no redelivery), the next job runs.
    after = submit_api(fresh_stack, logged_job(log, ticks=1), "davback")
    audit = audit_jobs(fresh_stack, [after], log, timeout=30, exact=False)
    audit.check()
    assert fresh_stack.job(job_id)["run_count"] == 1 and len(job_runs(log)[job_id]) == 1
    report(f"WebDAV {how} past a 3 s limit: job F, Exit_status -2, reason in comment")


# -- 4. dispatcher SIGKILL during submission -----------------------------------------


def test_dispatcher_sigkill_during_retried_submissions(fresh_stack: Stack,
                                                       tmp_path: Path) -> None:
    """The dispatcher is SIGKILLed three times while a client submits 40 jobs, each
    with a fixed submit id, retrying until 201: every submit id maps to one job id,
    a second retry round returns the same ids, and the server holds exactly 40 jobs."""
    fresh_stack.extra_env["PKBS_ACK_WAIT_SECONDS"] = "2"
    fresh_stack.up(workers=2, slots=2)
    endpoint, token = api_endpoint(fresh_stack)
    log = tmp_path / "runs.log"
    script = logged_job(log, ticks=2, tick=0.1)
    bodies = [submit_body(script, "dkill", submit_id=f"fault-dkill-{i:03d}") for i in range(40)]
    acked: dict[str, str] = {}
    retries = 0
    errors: list[str] = []

    def client() -> None:
        nonlocal retries
        for body in bodies:
            deadline = time.monotonic() + 40
            while True:
                status, data = try_post(endpoint, token, body)
                if status == 201:
                    acked[body["submit_id"]] = data["job_id"]
                    break
                if status not in (0, 502, 503, 504) or time.monotonic() > deadline:
                    errors.append(f"{body['submit_id']}: {status} {data}")
                    return
                retries += 1
                time.sleep(0.1)  # client retry pacing, not synchronisation

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    for at in (4, 14, 24):
        poll(lambda a=at: len(acked) >= a or not thread.is_alive(), 40, 0.01, "submissions")
        victim = fresh_stack.pid_of("dispatcher")
        os.kill(victim, signal.SIGKILL)
        wait_restarted(fresh_stack, "dispatcher", victim)
    thread.join(60)
    assert not errors, errors
    assert len(acked) == 40 and retries > 0
    assert len(set(acked.values())) == 40, "two submit ids share a job id"
    for body in bodies:  # a client that retries although it got its answer
        status, data = try_post(endpoint, token, body)
        assert status == 201 and data["job_id"] == acked[body["submit_id"]], data
        assert data["duplicate"] is True
    audit = audit_jobs(fresh_stack, list(acked.values()), log, timeout=60)
    report(audit.row(f"dispatcher SIGKILL x3 ({retries} client retries)"))
    audit.check()


# -- 5. full disk on the worker's job directory ---------------------------------------


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A stack whose workers' job directories live on a 4 MiB tmpfs (`mount -t tmpfs`,
    root only), where a job fills the disk; once its directory is gone another job runs."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    base = tmp_path_factory.mktemp("fulldisk")
    stack = Stack(base / "home")
    jobs = stack.home / "jobs"
    jobs.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(jobs)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        stack.up(workers=1, slots=1)
        hog = submit_api(stack, "dd if=/dev/zero of=big bs=64k count=1000\n", "diskhog")
        job = stack.wait_state(hog, "F", timeout=30)
        poll(lambda: _free_bytes(jobs) > 3 << 20, 10, 0.05, "the hog's directory to go")
        log = base / "runs.log"
        after = submit_api(stack, logged_job(log, ticks=1), "afterhog")
        audit = audit_jobs(stack, [after], log, timeout=30, exact=False)
        err = results_dir(stack, job) / str(job["Error_Path"]).rsplit("/", 1)[-1]
        report(audit.row("job dir full (tmpfs 4 MiB): the job after the disk hog"))
        yield {"stack": stack, "hog": job, "err": err, "audit": audit, "jobs": jobs,
               "log": log}
    finally:
        if (stack.home / "run" / "stack.json").exists():
            stack.down()
        poll(lambda: subprocess.run(["umount", str(jobs)]).returncode == 0, 10, 0.2, "umount")


def test_job_filling_its_disk_fails_alone(full_disk: dict[str, Any]) -> None:
    """The disk hog ends F with a non-zero Exit_status at its first run; the worker
    survives and runs the next job, whose results are stored."""
    hog = full_disk["hog"]
    assert hog["Exit_status"] not in (0, None) and hog.get("run_count") == 1, hog
    full_disk["audit"].check()
    assert process_healthy(full_disk["stack"], "worker-1")


def test_job_filling_its_disk_is_told_why(full_disk: dict[str, Any]) -> None:
    """Its own stderr is on the full disk too: the reason has to reach the record."""
    err: Path = full_disk["err"]
    comment = str(full_disk["hog"].get("comment") or "")
    told = (err.is_file() and "No space left" in err.read_text()) or "space" in comment
    assert told, f"no .e ({err.exists()}) and comment {comment!r}"


def test_job_arriving_on_a_full_worker_disk_runs_later(full_disk: dict[str, Any]) -> None:
    """The worker's disk is full (a file of the operator's, not a job's) when a job
    arrives; the space comes back; the job must then run and succeed."""
    stack: Stack = full_disk["stack"]
    filler = full_disk["jobs"] / "filler"
    # Unbuffered: nothing is left to flush (and fail) when the file is closed.
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    log: Path = full_disk["log"]
    job_id = submit_api(stack, logged_job(log, ticks=1), "fullwait")
    try:
        poll(lambda: (stack.job(job_id).get("run_count") or 0) >= 1
             or stack.job(job_id)["job_state"] == "F", 20, 0.05, "the job to be tried")
    finally:
        filler.unlink()
    audit = audit_jobs(stack, [job_id], log, timeout=30, exact=False)
    report(audit.row("worker disk full when the job arrives"))
    audit.check()


def test_array_ends_when_its_last_subjobs_ended_while_no_dispatcher_ran(
    fresh_stack: Stack, tmp_path: Path
) -> None:
    """Workers never write the array's record; the dispatchers count its ended subjobs
    in their job index. With the dispatcher dead (and the supervisor stopped, so it
    stays dead) while the subjobs end, the restarted dispatcher's first load counts
    them: the array ends F with the right Exit_status."""
    fresh_stack.up(workers=1, slots=3)
    gate = tmp_path / "gate"
    script = f"while [ ! -e {gate} ]; do sleep 0.05; done\n[ $PBS_ARRAY_INDEX != 2 ]\n"
    array = fresh_stack.qsub("-J", "1-3", input=script)
    for index in (1, 2, 3):
        fresh_stack.wait_state(array.replace("[]", f"[{index}]"), "R")
    supervisor = int(fresh_stack.state()["supervisor_pid"])
    dispatcher = fresh_stack.pid_of("dispatcher")
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(dispatcher, signal.SIGKILL)
        poll(lambda: pid_gone(dispatcher), 10, 0.02, "the dispatcher to die")
        gate.write_text("go")
        worker_log = fresh_stack.home / "logs" / "worker-1.log"
        poll(lambda: worker_log.read_text().count('"job finished"') >= 3, 30, 0.05,
             "the three subjobs to end")
    finally:
        os.kill(supervisor, signal.SIGCONT)
    wait_restarted(fresh_stack, "dispatcher", dispatcher)
    job = fresh_stack.wait_state(array, "F", timeout=30)
    assert job["Exit_status"] == 1, job  # subjob 2 exited 1
    assert "Expired:3" in job["array_state_count"], job
