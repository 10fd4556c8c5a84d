"""Jobs can submit jobs: the counter demo (examples/counter) and the job-scoped token.

Inside a job the worker sets PKBS_ENDPOINT and a PKBS_TOKEN that stands for the
job's owner while the job runs, so `qsub`/`qstat`/`qdel` work with no set-up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.stackutil import (
    Stack,
    cli,
    fetch_results,
    job_as,
    job_number,
    poll,
    submit,
    wait_state_as,
)

COUNTER = Path(__file__).resolve().parent.parent / "examples" / "counter" / "counter.sh"
LIMIT = 5
JOB_LINE = re.compile(
    r"^job (?P<id>\d+\.pkbs) in (?P<dir>\S+): count (?P<n>\d+) of (?P<limit>\d+)$")


def _output(stack: Stack, job_id: str, name: str, dest: Path, env: dict[str, str]) -> str:
    fetch_results(stack, job_id, dest / job_id, env=env)
    return (dest / job_id / f"{name}.o{job_number(job_id)}").read_text()


def test_counter_chain_submits_until_the_limit(stack: Stack, tmp_path: Path) -> None:
    alice = stack.as_user("counter-alice")
    first = submit(stack, "-v", f"COUNT=0,LIMIT={LIMIT}", str(COUNTER), env=alice)

    # Follow the chain: each job's output names the job it submitted.
    chain: list[str] = [first]
    outputs: dict[str, str] = {}
    jobs: dict[str, dict[str, Any]] = {}
    while True:
        job_id = chain[-1]
        jobs[job_id] = wait_state_as(stack, job_id, "F", env=alice, timeout=30)
        outputs[job_id] = _output(stack, job_id, "counter", tmp_path, alice)
        nxt = re.search(r"^submitted (\S+)$", outputs[job_id], re.M)
        if nxt is None:
            break
        chain.append(nxt.group(1))
        assert len(chain) <= LIMIT, f"the chain went past the limit: {chain}"

    assert len(chain) == LIMIT, chain
    assert len(set(chain)) == LIMIT
    owners = {jobs[j]["Job_Owner"] for j in chain}
    assert len(owners) == 1 and owners.pop().startswith("counter-alice@"), jobs

    workdirs: list[str] = []
    for n, job_id in enumerate(chain, start=1):
        job, out = jobs[job_id], outputs[job_id]
        assert job["Exit_status"] == 0, (job_id, out)
        assert job["Job_Name"] == "counter"  # the #PBS -N directive, kept by the chain
        assert str(job["Variable_List"]["COUNT"]) == str(n - 1)
        assert str(job["Variable_List"]["LIMIT"]) == str(LIMIT)
        line = JOB_LINE.match(out.splitlines()[0])
        assert line, out
        assert (line["id"], line["n"], line["limit"]) == (job_id, str(n), str(LIMIT))
        workdirs.append(line["dir"])
        if n < LIMIT:
            assert out.splitlines()[1:] == [f"submitted {chain[n]}"], out
        else:
            assert out.splitlines()[1:] == [f"final count: {LIMIT}"], out

    # Submitted from inside the previous job: qsub ran in that job's directory
    # on the worker, which the next job records as its PBS_O_WORKDIR.
    assert jobs[first]["Variable_List"]["PBS_O_WORKDIR"] == str(stack.home)  # stackutil's cwd
    for prev_dir, job_id in zip(workdirs, chain[1:], strict=False):
        assert jobs[job_id]["Variable_List"]["PBS_O_WORKDIR"] == prev_dir, jobs[job_id]
        assert jobs[job_id]["Submit_arguments"].startswith("-N counter -v COUNT="), jobs[job_id]

    # And the whole chain is visible with qstat -x.
    listed = stack.qstat_json(env=alice)["Jobs"]
    assert set(chain) <= set(listed)


def _job_token(out: str) -> str:
    match = re.search(r"^token=(pkbsjob\.\S+)$", out, re.M)
    assert match, out
    return match.group(1)


def test_job_token_stops_working_when_the_job_ends(stack: Stack, tmp_path: Path) -> None:
    alice = stack.as_user("token-alice")
    script = (
        'echo "token=$PKBS_TOKEN"\n'
        'qstat -f "$PBS_JOBID" | grep -q "job_state = R" && echo "qstat works inside"\n'
    )
    job_id = submit(stack, "-N", "tok", input=script, env=alice)
    job = wait_state_as(stack, job_id, "F", env=alice)
    assert job["Exit_status"] == 0
    out = _output(stack, job_id, "tok", tmp_path, alice)
    assert "qstat works inside" in out, out
    job_env = {"PKBS_ENDPOINT": alice["PKBS_ENDPOINT"], "PKBS_TOKEN": _job_token(out)}

    for command in (("qstat", "-x", job_id), ("qsub",)):
        result = cli(stack, *command, env=job_env, input="true\n")
        assert result.returncode != 0, result
        assert result.stdout == ""
        assert result.stderr == (
            f"{command[0]}: Invalid credential: the token's job is no longer running\n"
        )
    # The user's own token still works.
    assert job_as(stack, job_id, alice)["job_state"] == "F"


def test_job_token_cannot_qdel_another_users_job(stack: Stack, tmp_path: Path) -> None:
    alice, bob = stack.as_user("qdel-alice"), stack.as_user("qdel-bob")
    bobs = submit(stack, "-N", "bobs", input="sleep 60\n", env=bob)
    own = submit(stack, "-N", "own", input="sleep 60\n", env=alice)
    try:
        wait_state_as(stack, bobs, "R", env=bob)
        script = (
            'qdel "$OTHER" 2>&1; echo "other rc=$?"\n'
            'qdel "$OWN" 2>&1; echo "own rc=$?"\n'
        )
        job_id = submit(stack, "-N", "deleter", "-v", f"OTHER={bobs},OWN={own}", input=script,
                        env=alice)
        assert wait_state_as(stack, job_id, "F", env=alice)["Exit_status"] == 0
        out = _output(stack, job_id, "deleter", tmp_path, alice)
        assert f"qdel: Unauthorized Request {bobs}\n" in out, out
        assert "other rc=0" not in out and "own rc=0\n" in out, out
        assert job_as(stack, bobs, bob)["job_state"] == "R"
        own_job = wait_state_as(stack, own, "F", env=alice)
        assert own_job["job_state"] == "F"
    finally:
        cli(stack, "qdel", bobs, env=bob)
        cli(stack, "qdel", own, env=alice)
    poll(lambda: job_as(stack, bobs, bob)["job_state"] == "F", 30, 0.1, f"{bobs} to finish")
