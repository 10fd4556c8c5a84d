"""qmgr's hook requests end to end: create, set the event, import the script from a
file on the client, list; the hook then rejects a qsub; only the admin may change hooks."""

from __future__ import annotations

from pathlib import Path

from tests.stackutil import Stack


def test_qmgr_installs_a_hook_that_rejects_by_ncpus(fresh_stack: Stack, tmp_path: Path) -> None:
    fresh_stack.up(workers=1, slots=1)
    script = tmp_path / "ncpus_limit.py"
    script.write_text(
        "import pbs\n"
        "e = pbs.event()\n"
        "ncpus = e.job.Resource_List['ncpus']\n"
        "if ncpus is not None and ncpus > 1:\n"
        "    e.reject('at most 1 cpu here')\n"
    )
    for request in ("create hook ncpus_limit", "set hook ncpus_limit event = queuejob",
                    f"import hook ncpus_limit application/x-python default {script.name}"):
        done = fresh_stack.run("qmgr", "-c", request, cwd=tmp_path)
        assert done.returncode == 0, (request, done.stdout, done.stderr)
    listed = fresh_stack.run("qmgr", "-c", "list hook ncpus_limit")
    assert "Hook ncpus_limit" in listed.stdout and "queuejob" in listed.stdout, listed.stdout
    refused = fresh_stack.run("qsub", "-l", "ncpus=2", input="true\n")
    assert refused.returncode != 0 and refused.stderr == "qsub: at most 1 cpu here\n"
    assert fresh_stack.qsub("-h", input="true\n")  # one cpu: accepted

    user = fresh_stack.as_user("not-admin")
    denied = fresh_stack.run("qmgr", "-c", "delete hook ncpus_limit", env=user)
    assert denied.returncode != 0 and "Unauthorized Request" in denied.stderr
    gone = fresh_stack.run("qmgr", "-c", "delete hook ncpus_limit")
    assert gone.returncode == 0, gone.stderr
