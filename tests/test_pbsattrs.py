"""pkbs.pbsattrs: a job's PBS attributes as the dispatcher serves them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pkbs.cli import formats

from pkbs import pbsattrs
from pkbs.models import JobRecord, JobSpec
from pkbs.pbsvalues import TIME_ATTRIBUTES
from pkbs.states import JobState

NOV11 = 1478887025  # Fri Nov 11 17:57:05 2016 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_record(state: JobState = JobState.QUEUED, **kw: Any) -> JobRecord:
    spec_kw: dict[str, Any] = {
        "name": "hello.sh",
        "kind": "file",
        "entrypoint": "hello.sh",
        "resources": {"walltime": "00:10:00"},
        "variables": {"PBS_O_HOME": "/home/alice", "PBS_O_WORKDIR": "/home/alice"},
        "submit_host": "login1",
        "submit_args": "hello.sh",
    }
    spec_kw.setdefault("queue", "workq")  # as the server stores it
    spec_kw.update(kw.pop("spec", {}))
    rec_kw: dict[str, Any] = {
        "number": 7,
        "server": "pkbs",
        "owner": "alice",
        "spec": JobSpec(**spec_kw),
        "state": state,
        "submit_id": "submit-0001",
        "ctime": NOV11,
        "qtime": NOV11,
        "mtime": NOV11,
    }
    rec_kw.update(kw)
    return JobRecord(**rec_kw)


def running_record() -> JobRecord:
    return make_record(
        JobState.RUNNING,
        spec={"attributes": {"Account_Name": "proj1", "Execution_Time": "1478887000"}},
        stime=NOV11 + 5,
        mtime=NOV11 + 5,
        exec_host="node1",
        euser="batch",
        session_id=4242,
        run_count=1,
        resources_used={"walltime": "00:00:30", "cput": "00:00:29", "mem": "1024KB"},
        results_url="http://dav.example/results/7",
        comment="Job run at Fri Nov 11 at 17:57 on (node1:ncpus=1)",
    )


def test_queued_job_golden_full_output() -> None:
    record = make_record()
    attrs = pbsattrs.job_attributes(record)
    assert formats.full([(record.job_id, attrs)]) == (
        "Job Id: 7.pkbs\n"
        "    Job_Name = hello.sh\n"
        "    Job_Owner = alice@login1\n"
        "    job_state = Q\n"
        "    queue = workq\n"
        "    server = pkbs\n"
        "    Checkpoint = u\n"
        "    ctime = Fri Nov 11 17:57:05 2016\n"
        "    Error_Path = login1:/home/alice/hello.sh.e7\n"
        "    Hold_Types = n\n"
        "    Join_Path = n\n"
        "    Keep_Files = n\n"
        "    Mail_Points = a\n"
        "    mtime = Fri Nov 11 17:57:05 2016\n"
        "    Output_Path = login1:/home/alice/hello.sh.o7\n"
        "    Priority = 0\n"
        "    qtime = Fri Nov 11 17:57:05 2016\n"
        "    Rerunable = True\n"
        "    Resource_List.ncpus = 1\n"
        "    Resource_List.nodect = 1\n"
        "    Resource_List.place = pack\n"
        "    Resource_List.select = 1:ncpus=1\n"
        "    Resource_List.walltime = 00:10:00\n"
        "    substate = 10\n"
        "    Variable_List = PBS_O_HOME=/home/alice,PBS_O_WORKDIR=/home/alice,\n"
        "\tPBS_O_QUEUE=workq,PBS_O_HOST=login1\n"
        "    queue_rank = 7\n"
        "    queue_type = E\n"
        "    etime = Fri Nov 11 17:57:05 2016\n"
        "    Submit_arguments = hello.sh\n"
        "    project = _pbs_project_default\n"
        "    Submit_Host = login1\n"
        "\n"
    )


def test_running_job_order() -> None:
    attrs = pbsattrs.job_attributes(running_record())
    assert list(attrs) == [
        "Job_Name",
        "Job_Owner",
        "resources_used.cput",
        "resources_used.mem",
        "resources_used.walltime",
        "job_state",
        "queue",
        "server",
        "Account_Name",
        "Checkpoint",
        "ctime",
        "Error_Path",
        "exec_host",
        "exec_vnode",
        "Execution_Time",
        "Hold_Types",
        "Join_Path",
        "Keep_Files",
        "Mail_Points",
        "mtime",
        "Output_Path",
        "Priority",
        "qtime",
        "Rerunable",
        "Resource_List.ncpus",
        "Resource_List.nodect",
        "Resource_List.place",
        "Resource_List.select",
        "Resource_List.walltime",
        "stime",
        "session_id",
        "substate",
        "Variable_List",
        "euser",
        "queue_rank",
        "queue_type",
        "comment",
        "etime",
        "run_count",
        "Submit_arguments",
        "project",
        "Submit_Host",
        "results_url",
    ]
    assert attrs["exec_host"] == "node1/0"
    assert attrs["exec_vnode"] == "(node1:ncpus=1)"
    assert attrs["resources_used.mem"] == "1024kb"
    assert attrs["substate"] == 42


def test_running_job_comment_is_when_and_where_it_runs() -> None:
    """PBS's server comments a job it runs `Job run at <%a %b %d> at <%H:%M> on
    <exec_vnode>`; pkbs shows it from the record's stime and exec_host while the job
    runs, unless the record has a comment of its own (a rerun's, say)."""
    bare = running_record().model_copy(update={"comment": None})
    attrs = pbsattrs.job_attributes(bare)
    assert attrs["comment"] == "Job run at Fri Nov 11 at 17:57 on (node1:ncpus=1)"
    assert list(attrs).index("comment") == list(attrs).index("queue_type") + 1
    own = bare.model_copy(update={"comment": "Rerun after its worker was lost"})
    assert pbsattrs.job_attributes(own)["comment"] == "Rerun after its worker was lost"
    ended = bare.model_copy(update={"state": JobState.FINISHED, "exit_status": 0})
    assert "comment" not in pbsattrs.job_attributes(ended)


def test_value_types() -> None:
    record = running_record().model_copy(
        update={"state": JobState.FINISHED, "exit_status": 0, "obittime": NOV11 + 60}
    )
    attrs = pbsattrs.job_attributes(record)
    for name, value in attrs.items():
        if name in TIME_ATTRIBUTES or name in pbsattrs.INT_ATTRIBUTES:
            assert type(value) is int, name
        elif name == "Variable_List":
            assert isinstance(value, dict)
        else:
            assert type(value) is str, name
    assert attrs["Exit_status"] == 0
    assert attrs["session_id"] == 4242
    assert attrs["run_count"] == 1
    assert attrs["Priority"] == 0
    assert attrs["ctime"] == NOV11
    assert attrs["obittime"] == NOV11 + 60
    assert attrs["Execution_Time"] == 1478887000
    assert attrs["substate"] == 92
    # The wire is JSON: types and order survive it.
    assert json.loads(json.dumps(attrs)) == attrs
    assert list(json.loads(json.dumps(attrs))) == list(attrs)


def test_only_set_attributes() -> None:
    attrs = pbsattrs.job_attributes(make_record())
    for name in (
        "stime",
        "obittime",
        "session_id",
        "Exit_status",
        "exec_host",
        "exec_vnode",
        "comment",
        "results_url",
        "run_count",
        "Account_Name",
        "Shell_Path_List",
    ):
        assert name not in attrs
    assert not [k for k in attrs if k.startswith("resources_used.")]
    held = pbsattrs.job_attributes(make_record(JobState.HELD, hold_types="u"))
    assert "etime" not in held
    assert held["Hold_Types"] == "u"


def test_defaults_and_given_values() -> None:
    attrs = pbsattrs.job_attributes(
        make_record(
            spec={
                "rerunnable": False,
                "join": "oe",
                "keep": "eo",
                "shell": "/bin/bash",
                "attributes": {"Mail_Points": "abe", "project": "p1", "Priority": "10"},
            }
        )
    )
    assert attrs["Rerunable"] == "False"
    assert attrs["Join_Path"] == "oe"
    assert attrs["Keep_Files"] == "eo"
    assert attrs["Shell_Path_List"] == "/bin/bash"
    assert attrs["Mail_Points"] == "abe"
    assert attrs["project"] == "p1"
    assert attrs["Priority"] == 10
    defaults = pbsattrs.job_attributes(make_record())
    assert defaults["Checkpoint"] == "u"
    assert defaults["Mail_Points"] == "a"
    assert defaults["project"] == "_pbs_project_default"
    assert defaults["Job_Owner"] == "alice@login1"
    assert defaults["queue_type"] == "E"


def test_output_and_error_paths() -> None:
    attrs = pbsattrs.job_attributes(make_record())
    assert attrs["Output_Path"] == "login1:/home/alice/hello.sh.o7"
    assert attrs["Error_Path"] == "login1:/home/alice/hello.sh.e7"
    given = pbsattrs.job_attributes(
        make_record(spec={"output_path": "other:/tmp/out.log", "error_path": "/tmp/logs/"})
    )
    assert given["Output_Path"] == "other:/tmp/out.log"
    assert given["Error_Path"] == "login1:/tmp/logs/"  # qsub adds the submit host
    nowork = pbsattrs.job_attributes(make_record(spec={"variables": {}}))
    assert nowork["Output_Path"] == "login1:hello.sh.o7"


def test_variable_list_gets_queue_and_host() -> None:
    attrs = pbsattrs.job_attributes(
        make_record(spec={"variables": {"PBS_O_WORKDIR": "/w", "PBS_O_HOST": "h2", "A": "1,2"}})
    )
    assert attrs["Variable_List"] == {
        "PBS_O_WORKDIR": "/w",
        "PBS_O_HOST": "h2",
        "A": "1,2",
        "PBS_O_QUEUE": "workq",
    }


def test_resource_defaults_without_select() -> None:
    res = pbsattrs.job_attributes(make_record(spec={"resources": {}}))
    assert {k: v for k, v in res.items() if k.startswith("Resource_List.")} == {
        "Resource_List.ncpus": "1",
        "Resource_List.nodect": "1",
        "Resource_List.place": "pack",
        "Resource_List.select": "1:ncpus=1",
    }
    assert pbsattrs.resource_list({"ncpus": "4", "mem": "2GB", "walltime": "3600"}) == {
        "ncpus": "4",
        "mem": "2gb",
        "walltime": "01:00:00",
        "select": "1:mem=2gb:ncpus=4",
        "place": "pack",
        "nodect": "1",
    }


def test_resource_sums_from_select() -> None:
    res = pbsattrs.resource_list({"select": "2:ncpus=4:mem=1gb+1:ncpus=2", "walltime": "1:00"})
    assert res == {
        "select": "2:ncpus=4:mem=1gb+1:ncpus=2",
        "walltime": "00:01:00",
        "nodect": "3",
        "ncpus": "10",
        "mem": "2gb",
        "place": "free",
    }
    assert pbsattrs.resource_list({"select": "3", "place": "scatter"})["ncpus"] == "3"
    assert pbsattrs.resource_list({"select": "3", "place": "scatter"})["place"] == "scatter"
    mixed = pbsattrs.resource_list({"select": "1:mem=1gb+1:mem=512mb"})
    assert mixed["mem"] == "1536mb"
    # dask-jobqueue style
    attrs = pbsattrs.job_attributes(
        make_record(spec={"resources": {"select": "1:ncpus=8:mem=16GB", "walltime": "00:30:00"}})
    )
    assert attrs["Resource_List.ncpus"] == "8"
    assert attrs["Resource_List.mem"] == "16gb"
    assert list(k for k in attrs if k.startswith("Resource_List.")) == [
        "Resource_List.mem",
        "Resource_List.ncpus",
        "Resource_List.nodect",
        "Resource_List.place",
        "Resource_List.select",
        "Resource_List.walltime",
    ]


def test_finished_substates() -> None:
    deleted = make_record(JobState.FINISHED, deleted_by="alice")
    failed = make_record(JobState.FINISHED, exit_status=1)
    assert pbsattrs.job_attributes(deleted)["substate"] == 91
    assert pbsattrs.job_attributes(failed)["substate"] == 93


def test_unknown_attributes_follow_known_ones() -> None:
    attrs = pbsattrs.job_attributes(
        make_record(spec={"attributes": {"zz_site": "x", "depend": "afterok:6.pkbs"}})
    )
    keys = list(attrs)
    assert keys.index("depend") == keys.index("ctime") + 1
    assert keys[-1] == "zz_site"


def test_job_summary_and_entry() -> None:
    record = running_record()
    summary = pbsattrs.job_summary(record)
    assert set(summary) <= pbsattrs.SUMMARY_ATTRIBUTES
    assert summary["Job_Name"] == "hello.sh"
    assert summary["resources_used.cput"] == "00:00:29"
    entry = pbsattrs.job_entry(record, full=False)
    assert entry == {"id": "7.pkbs", "attributes": summary}
    table = formats.default_table([(entry["id"], summary)])  # type: ignore[list-item]
    assert table.splitlines()[2] == (
        "7.pkbs            hello.sh         alice             00:00:29 R workq           "
    )


def test_queue_and_server_attributes() -> None:
    counts = {"Q": 1, "R": 2, "F": 5}
    q = pbsattrs.queue_attributes("workq", counts)
    assert q["state_count"] == "Transit:0 Queued:1 Held:0 Waiting:0 Running:2 Exiting:0 Begun:0 "
    assert q["total_jobs"] == 3
    assert formats.queue_table([("workq", q)]).splitlines()[2] == (
        "workq                0     3 yes yes     1     2     0     0     0     0 Exe*"
    )
    assert "Priority" not in q
    high = pbsattrs.queue_attributes("high", counts, priority=10)
    assert list(high)[:3] == ["queue_type", "Priority", "total_jobs"]
    assert formats.queue_full([("high", high)]).splitlines()[:3] == [
        "Queue: high",
        "    queue_type = Execution",
        "    Priority = 10",
    ]
    s = pbsattrs.server_attributes("pkbs", ["workq"], counts, version="0.1.0")
    assert list(s)[:6] == [
        "server_state",
        "server_host",
        "scheduling",
        "total_jobs",
        "state_count",
        "default_queue",
    ]
    assert s["default_queue"] == "workq"
    out = formats.server_full("pkbs", s)
    # What Nextflow extracts: awk '$1 == "Server:" {print "@"$2}'.
    first = out.splitlines()[0].split()
    assert first == ["Server:", "pkbs"]
    assert formats.server_table([("pkbs", s)]).splitlines()[2] == (
        "pkbs                 0     3     1     2     0     0     0     0 Active    "
    )


def test_pbsattrs_imports_no_pydantic_at_runtime() -> None:
    import subprocess
    import sys

    code = "import sys, pkbs.pbsattrs; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
