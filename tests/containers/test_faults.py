"""Faults across hosts: pkbs as containers (the kind overlay's pods), each scenario
ending in the audit the local fault tests use (tests.stackutil.audit_jobs): every job
final once with the expected exit status, its .o on WebDAV, the runs counted, no two
runs of one job overlapping.

Each prints a row of the scenario table (`pytest -s` or `-rA`): jobs, faults, lost,
duplicated, reruns.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from pkbs.cli.client import Client
from pkbs.cli.qsub import script_request

from pkbs.clientconfig import ClientConfig
from tests.containers.system import AUDIT_DIR, System
from tests.stackutil import BIN, audit_jobs, logged_job, poll

RUN_LOG = f"{AUDIT_DIR}/runs.log"


def report(row: str) -> None:
    print(f"SCENARIO {row}")


def submit_logged(system: System, count: int, ticks: int = 3, name: str = "c") -> list[str]:
    client = Client(ClientConfig(f"http://{system.proxy_address}", system.admin_token))
    bodies = [script_request(logged_job(Path(RUN_LOG), ticks=ticks), ["-N", f"{name}{i}"])
              for i in range(count)]
    return client.submit_many(bodies)


def test_dispatcher_killed_during_a_batch_submit(system: System) -> None:
    """Two dispatcher replicas behind one Service; one is SIGKILLed (the kubelet
    restarts it) while a batch of 300 jobs goes in 15 requests: the client retries,
    nothing is lost, nothing is submitted twice."""
    system.up(workers=2)
    assert len(system.pods("dispatcher")) == 2
    ids: list[str] = []
    done = threading.Event()

    def batch() -> None:
        client = Client(ClientConfig(f"http://{system.proxy_address}", system.admin_token))
        bodies = [script_request(logged_job(Path(RUN_LOG), ticks=1), ["-N", f"b{i}"])
                  for i in range(300)]
        for start in range(0, 300, 20):
            ids.extend(client.submit_many(bodies[start:start + 20]))
        done.set()

    submitter = threading.Thread(target=batch)
    submitter.start()
    poll(lambda: len(ids) >= 60, 60, 0.2, "the first batches")
    victim = system.pods("dispatcher")[0]
    system.cluster.kill(victim)
    submitter.join(timeout=120)
    assert done.is_set() and len(ids) == 300 == len(set(ids))
    audit = audit_jobs(system, ids, system.audit_log, timeout=180)
    report(audit.row("2 dispatchers, one SIGKILLed during a batch of 300"))
    audit.check()
    poll(lambda: victim.restarts >= 1 and victim.ready, 60, 0.2, "the killed dispatcher back")


def test_worker_pod_lost_mid_job_reruns_elsewhere(system: System) -> None:
    """A worker pod is deleted (SIGKILL, as a lost node) while its job runs: the job
    is rerun on another pod after the ack wait and finishes once."""
    system.up(workers=2)
    job_id = system.qsub("-N", "lost", input=logged_job(Path(RUN_LOG), ticks=40))
    system.wait_started(job_id)
    poll(lambda: system.logged_starts(job_id) >= 1, 30, 0.2, "the job's first line")
    victim = system.pod_running(job_id)
    system.cluster.delete_pod(victim)
    final = system.wait_state(job_id, "F", timeout=120)
    assert final["run_count"] == 2, final
    assert not final["exec_host"].startswith(victim.name), final["exec_host"]
    audit = audit_jobs(system, [job_id], system.audit_log, timeout=30)
    report(audit.row("worker pod deleted mid-job"))
    audit.check()
    assert audit.reruns == 1


def test_partitioned_worker_never_replaces_the_reruns_results(system: System,
                                                               tmp_path: Path) -> None:
    """A worker is cut off from the network while its job runs. The job is rerun
    on the other worker and finishes there. The cut-off run ends meanwhile and
    keeps trying to store its results; once healed it reaches WebDAV, but its
    results never become the job's: `pkbs fetch` returns the rerun's output, and the
    stale run's files are removed."""
    system.up(workers=2)
    flag = system.workdir / "audit" / "go"
    script = (
        "#!/bin/bash\n"
        f'echo "start $PBS_JOBID $$ $EPOCHREALTIME" >> {RUN_LOG}\n'
        f'run=$(grep -c "^start $PBS_JOBID " {RUN_LOG})\n'
        f"for i in $(seq 1 600); do [ -e {AUDIT_DIR}/go ] && break; sleep 0.1; done\n"
        'echo "out $PBS_JOBID"\necho "run $run on $(hostname)"\n'
        f'echo "end $PBS_JOBID $$ $EPOCHREALTIME" >> {RUN_LOG}\n'
    )
    job_id = system.qsub("-N", "cut", input=script)
    system.wait_started(job_id)
    poll(lambda: system.logged_starts(job_id) >= 1, 30, 0.2, "the job to start")
    cut = system.pod_running(job_id)
    system.cluster.partition(cut)
    flag.touch()  # the cut-off run ends now, and cannot store its results
    final = system.wait_state(job_id, "F", timeout=120)
    assert final["run_count"] == 2, final
    rerun_host = final["exec_host"].split("/", 1)[0]
    assert rerun_host != cut.name
    system.cluster.heal(cut)
    # The healed worker stores its run's files, loses the final compare-and-set and
    # removes them again; only the rerun's collection stays.
    poll(lambda: "superseded" in cut.logs(), 90, 0.2, "the healed worker to let go")
    poll(lambda: _run_collections(system, job_id) == 1, 60, 0.2,
         "the stale run's results to be removed")
    out = tmp_path / "fetched"
    fetched = system.run(str(BIN / "pkbs"), "fetch", job_id, str(out))
    assert fetched.returncode == 0, fetched.stderr
    (output,) = out.glob("cut.o*")
    assert f"run 2 on {rerun_host}" in output.read_text(), output.read_text()
    audit = audit_jobs(system, [job_id], system.audit_log, timeout=30)
    report(audit.row("worker partitioned mid-job, healed after the rerun"))
    audit.check()


def _run_collections(system: System, job_id: str) -> int:
    """How many runs' result collections the job has on the WebDAV volume."""
    found = [p for p in system.webdav_root.rglob(job_id) if p.is_dir()]
    return sum(1 for folder in found for child in folder.iterdir() if child.is_dir())


def test_dispatcher_partitioned_and_healed(system: System) -> None:
    """One of two dispatchers is cut off while jobs are submitted and run; when healed
    its job index has caught up: it lists every job the other one stored."""
    system.up(workers=2)
    first = submit_logged(system, 20, name="before")
    cut = system.pods("dispatcher")[0]
    system.cluster.partition(cut)
    during = submit_logged(system, 20, name="during")
    system.cluster.heal(cut)
    poll(lambda: cut.ready, 60, 0.2, "the healed dispatcher to be ready")
    audit = audit_jobs(system, first + during, system.audit_log, timeout=120)
    report(audit.row("dispatcher partitioned and healed"))
    audit.check()
    listed = _listing(system, cut.ip)
    assert set(first + during) <= listed


def _listing(system: System, ip: str) -> set[str]:
    request = urllib.request.Request(
        f"http://{ip}:8000/v1/jobs?view=table&history=true",
        headers={"Authorization": f"Bearer {system.admin_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        table: dict[str, Any] = json.load(response)
    return {str(row[0]) for row in table["rows"]}


def test_webdav_partitioned_while_jobs_finish(system: System) -> None:
    """WebDAV is cut off while jobs finish: the workers keep their results and retry;
    healed, every job ends F with its results stored."""
    system.up(workers=2)
    ids = submit_logged(system, 12, ticks=10)
    poll(lambda: sum(system.logged_starts(j) for j in ids) >= 4, 60, 0.2, "jobs to start")
    webdav = system.pods("webdav")[0]
    system.cluster.partition(webdav)
    poll(lambda: any(system.job(j).get("job_state") == "R" for j in ids), 30, 0.2, "a run")
    time.sleep(8)  # the fault's duration: jobs end during it (not a synchronisation)
    system.cluster.heal(webdav)
    audit = audit_jobs(system, ids, system.audit_log, timeout=180)
    report(audit.row("WebDAV partitioned 8 s while jobs finish"))
    audit.check()


def test_nats_restarted_with_its_volume(system: System) -> None:
    """nats-0 is stopped and started again (its volume kept) while jobs run and more
    are submitted: nothing is lost."""
    system.up(workers=2)
    first = submit_logged(system, 20, ticks=5, name="before")
    poll(lambda: sum(system.logged_starts(j) for j in first) >= 2, 60, 0.2, "jobs to start")
    nats = system.pods("nats")[0]
    system.cluster.restart(nats, timeout=10)
    system.cluster.wait_ready("nats", timeout=120)
    after = submit_logged(system, 20, ticks=1, name="after")
    audit = audit_jobs(system, first + after, system.audit_log, timeout=240)
    report(audit.row("nats-0 restarted with its volume"))
    audit.check()


def test_workers_scaled_while_an_array_runs(system: System) -> None:
    """Workers go 1 -> 3 -> 0 -> 2 while a 200-element array runs, as an autoscaler
    would scale them; scale-down is SIGTERM with the manifest's grace: running
    subjobs drain or are handed back, none is lost or run twice at once."""
    system.up(workers=1)
    array = system.qsub("-N", "scaled", "-J", "1-200", input=logged_job(Path(RUN_LOG), ticks=2))
    number = array.split("[", 1)[0]
    subjobs = [f"{number}[{i}].{array.split('.', 1)[1]}" for i in range(1, 201)]

    def ended() -> int:
        log = system.audit_log.read_text() if system.audit_log.exists() else ""
        return log.count("\nend ") + log.startswith("end ")

    poll(lambda: ended() >= 10, 90, 0.2, "10 subjobs on one worker")
    system.cluster.scale("worker", 3)
    system.cluster.wait_ready("worker", 3)
    poll(lambda: ended() >= 60, 120, 0.2, "60 subjobs on three workers")
    system.cluster.scale("worker", 0)  # every worker drains (SIGTERM), then is gone
    stopped_at = ended()
    assert stopped_at < 200, "the array ended before the workers were gone"
    assert system.job(array)["job_state"] == "B"
    system.cluster.scale("worker", 2)
    audit = audit_jobs(system, subjobs, system.audit_log, timeout=240, exact=False)
    report(audit.row("workers 1 -> 3 -> 0 -> 2 under a 200-element array"))
    audit.check()
    final = system.job(array)
    assert final["job_state"] == "F" and final["Exit_status"] == 0, final
