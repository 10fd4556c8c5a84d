"""Array jobs end to end through the real CLI: qsub -J (with a step; the range must
ascend), qstat -t/-J, subjob environment and output names, the array's Exit_status (1
if any subjob failed), qdel of a queued subjob or of a running array."""

from __future__ import annotations

import getpass
import re
from pathlib import Path

import pytest

from tests.stackutil import Stack, cli, fetch_results, files_under, poll, submit

EXIT_SIGTERM = 256 + 15
USER = getpass.getuser()


def _row(job_id: str, name: str, state: str, time_use: str = "0") -> str:
    # The row printf of qstat.c (PBS.md section 1).
    return "%-17s %-16s %-16s  %8s %1s %-16s" % (  # noqa: UP031
        job_id,
        name,
        USER,
        time_use,
        state,
        "workq",
    )


def _qsub_array(stack: Stack, *args: str, input: str) -> tuple[str, int]:
    """qsub -J ...: stdout is exactly `N[].pkbs`; returns (array id, N)."""
    result = cli(stack, "qsub", *args, input=input)
    assert (result.returncode, result.stderr) == (0, ""), result
    number = result.stdout.split("[", 1)[0]
    assert number.isdigit() and result.stdout == f"{number}[].pkbs\n", result.stdout
    return f"{number}[].pkbs", int(number)


def _rows(stack: Stack, *args: str, number: int | None = None) -> list[str]:
    """The qstat table rows (header dropped), only those of array `number` if given."""
    result = cli(stack, "qstat", *args)
    assert (result.returncode, result.stderr) == (0, ""), result
    rows = result.stdout.splitlines()[2:]
    return [r for r in rows if number is None or r.startswith(f"{number}[")]


def _states(stack: Stack, number: int) -> dict[str, str]:
    """{job id: S column} of the array and its subjobs, from qstat -t -x."""
    return {r.split()[0]: r.split()[4] for r in _rows(stack, "-t", "-x", number=number)}


def _wait_running(stack: Stack, number: int, count: int) -> dict[str, str]:
    def check() -> dict[str, str] | None:
        states = _states(stack, number)
        return states if list(states.values()).count("R") >= count else None

    result: dict[str, str] = poll(check, 30, 0.1, f"{count} subjobs of {number}[] running")
    return result


def _gate(path: Path, timeout: int = 30) -> str:
    """A job script line that waits (at most `timeout` s) until `path` exists."""
    return f'for i in $(seq 1 {timeout * 20}); do [ -e "{path}" ] && break; sleep 0.05; done\n'


def _append(log: Path, text: str) -> str:
    return f'echo "{text}" >> "{log}"\n'


def test_array_ids_views_environment_and_outputs(stack: Stack, tmp_path: Path) -> None:
    go = tmp_path / "go"
    script = _gate(go) + 'echo "index=$PBS_ARRAY_INDEX array=$PBS_ARRAY_ID job=$PBS_JOBID"\n'
    array, n = _qsub_array(stack, "-J", "1-4", "-N", "arrview", input=script)
    subjobs = [f"{n}[{i}].pkbs" for i in range(1, 5)]
    try:
        _wait_running(stack, n, 4)
        head = _row(array, "arrview", "B")
        assert _rows(stack, number=n) == [head]
        assert _rows(stack, "-t", number=n) == [head] + [_row(s, "arrview", "R") for s in subjobs]
        arrays_only = _rows(stack, "-J")
        assert head in arrays_only and all("[]" in r.split()[0] for r in arrays_only)
    finally:
        go.touch()
    job = stack.wait_state(array, "F")
    assert job["Exit_status"] == 0
    assert job["array_indices_submitted"] == "1-4"
    states = _states(stack, n)
    assert states == {array: "F", **{s: "X" for s in subjobs}}, states
    fetched = fetch_results(stack, f"{n}[2].pkbs", tmp_path / "two")
    assert files_under(tmp_path / "two") == {
        f"arrview.o{n}.2": len(f"index=2 array={array} job={n}[2].pkbs\n"),
        f"arrview.e{n}.2": 0,
    }, fetched.stdout
    assert (tmp_path / "two" / f"arrview.o{n}.2").read_text() == (
        f"index=2 array={array} job={n}[2].pkbs\n"
    )


def test_array_step_runs_every_step_th_index(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "ran"
    array, n = _qsub_array(stack, "-J", "0-6:3", input=_append(log, "$PBS_ARRAY_INDEX"))
    job = stack.wait_state(array, "F")
    assert (job["Exit_status"], job["array_indices_submitted"]) == (0, "0-6:3")
    assert sorted(log.read_text().split()) == ["0", "3", "6"]
    assert _states(stack, n) == {
        array: "F",
        f"{n}[0].pkbs": "X",
        f"{n}[3].pkbs": "X",
        f"{n}[6].pkbs": "X",
    }


def test_array_exit_status_is_1_when_a_subjob_fails(stack: Stack) -> None:
    array, n = _qsub_array(
        stack, "-J", "1-3", input='[ "$PBS_ARRAY_INDEX" = 2 ] && exit 5\nexit 0\n'
    )
    assert stack.wait_state(array, "F")["Exit_status"] == 1
    assert [stack.job(f"{n}[{i}].pkbs")["Exit_status"] for i in (1, 2, 3)] == [0, 5, 0]


def _index(job_id: str) -> int:
    return int(job_id[job_id.index("[") + 1 : job_id.index("]")])


def test_qdel_of_a_queued_subjob(stack: Stack, tmp_path: Path) -> None:
    log, go = tmp_path / "ran", tmp_path / "go"
    array, n = _qsub_array(
        stack, "-J", "1-8", "-N", "arrdel", input=_append(log, "$PBS_ARRAY_INDEX") + _gate(go)
    )
    try:
        states = _wait_running(stack, n, 4)  # 4 slots: the other 4 wait
        queued = sorted(_index(j) for j, s in states.items() if s == "Q")
        assert queued, states
        victim = queued[-1]
        result = cli(stack, "qdel", f"{n}[{victim}]")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        assert stack.job(f"{n}[{victim}].pkbs")["job_state"] in ("X", "F")
    finally:
        go.touch()
    stack.wait_state(array, "F")
    others = [i for i in range(1, 9) if i != victim]
    assert sorted(int(i) for i in log.read_text().split()) == others
    for i in others:
        job = stack.job(f"{n}[{i}].pkbs")
        assert (job["job_state"], job["Exit_status"]) == ("X", 0)
    job = stack.job(f"{n}[{victim}].pkbs")
    assert job["job_state"] in ("X", "F") and "Exit_status" not in job, job
    assert "before it ran" in job["comment"], job


def test_subjob_that_never_ran_has_no_stime(stack: Stack, tmp_path: Path) -> None:
    go = tmp_path / "go"
    array, n = _qsub_array(stack, "-J", "1-8", input=_gate(go))
    try:
        states = _wait_running(stack, n, 4)
        victim = max(_index(j) for j, s in states.items() if s == "Q")
        cli(stack, "qdel", f"{n}[{victim}]")
        job = stack.job(f"{n}[{victim}].pkbs")
    finally:
        go.touch()
        stack.wait_state(array, "F")
    assert "stime" not in job, job["stime"]


def test_qdel_of_a_running_array(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "ran"
    array, n = _qsub_array(
        stack, "-J", "1-8", "-N", "arrkill", input=_append(log, "$PBS_ARRAY_INDEX") + "sleep 30\n"
    )
    states = _wait_running(stack, n, 4)
    running = sorted(j for j, s in states.items() if s == "R")
    try:
        poll(
            lambda: log.exists() and len(log.read_text().split()) == len(running),
            30,
            0.05,
            "the running subjobs to start their scripts",
        )
        result = cli(stack, "qdel", array)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        assert stack.wait_state(array, "F", timeout=30)["job_state"] == "F"
        for job_id in running:
            assert stack.wait_state(job_id, "X", timeout=10)["Exit_status"] == EXIT_SIGTERM
    finally:
        cli(stack, "qdel", *running)  # one by one works: free the slots either way
    # Give the workers their chance at the queued subjobs' work items.
    probe = submit(stack, "-N", "probe", input="true\n")
    assert stack.wait_state(probe, "F")["Exit_status"] == 0
    started = sorted(f"{n}[{i}].pkbs" for i in log.read_text().split())
    assert started == running


def test_array_range_must_have_start_below_end(stack: Stack) -> None:
    result = cli(stack, "qsub", "-J", "1-1", input="true\n")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("qsub: illegal -J value"), result.stderr


def test_array_of_200_subjobs_completes(stack: Stack) -> None:
    array, n = _qsub_array(stack, "-J", "1-200", input="true\n")
    job = stack.wait_state(array, "F", timeout=45)
    assert job["Exit_status"] == 0
    assert job["array_state_count"].split() == ["Queued:0", "Running:0", "Exiting:0", "Expired:200"]
    assert stack.job(f"{n}[200].pkbs")["Exit_status"] == 0


def test_array_output_path_carries_the_index_tag(stack: Stack) -> None:
    array, n = _qsub_array(stack, "-h", "-J", "1-2", "-N", "arrpath", input="true\n")
    try:
        job = stack.job(array)
        assert job["Output_Path"].endswith(f"/arrpath.o{n}.^array_index^"), job["Output_Path"]
        assert job["Error_Path"].endswith(f"/arrpath.e{n}.^array_index^"), job["Error_Path"]
    finally:
        cli(stack, "qdel", array)


# -- array_state_count, subjob ranges, deleted arrays, max_run_subjobs ------------------

EXIT_BADSTATE = 15016 & 0xFF
EXIT_IVALREQ = 15004 & 0xFF


def _state_count(stack: Stack, array: str) -> str:
    return str(stack.job(array)["array_state_count"])


def test_array_state_count_counts_running_and_ended_subjobs(stack: Stack, tmp_path: Path) -> None:
    go = tmp_path / "go"
    array, n = _qsub_array(stack, "-J", "1-3", input=_gate(go))
    try:
        _wait_running(stack, n, 3)
        poll(lambda: _state_count(stack, array) == "Queued:0 Running:3 Exiting:0 Expired:0 ",
             10, 0.1, "array_state_count to count 3 running subjobs")
        assert cli(stack, "qdel", f"{n}[2]").returncode == 0
        poll(lambda: _state_count(stack, array) == "Queued:0 Running:2 Exiting:0 Expired:1 ",
             20, 0.1, "array_state_count to count the deleted subjob as expired")
    finally:
        go.touch()
    stack.wait_state(array, "F")
    assert _state_count(stack, array) == "Queued:0 Running:0 Exiting:0 Expired:3 "


def test_job_commands_take_subjob_ranges(stack: Stack) -> None:
    """`N[2-3]`, `N[1-7:3]`, with or without the server: qstat shows, qdel deletes each
    subjob of the range; qsig and qrerun act on its running subjobs (none here:
    PBSE_BADSTATE); qhold and qrls refuse subjobs (PBSE_IVALREQ), as PBS does."""
    array, n = _qsub_array(stack, "-h", "-J", "1-8", "-N", "ranged", input="true\n")
    try:
        shown = cli(stack, "qstat", f"{n}[2-3]")
        assert (shown.returncode, shown.stderr) == (0, ""), shown
        assert shown.stdout.splitlines()[2:] == [
            _row(f"{n}[2].pkbs", "ranged", "Q"), _row(f"{n}[3].pkbs", "ranged", "Q")
        ]
        for ids in (f"{n}[2-3].pkbs", f"{n}[1-7:3]"):
            result = cli(stack, "qdel", ids)
            assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), ids
        for i in (1, 2, 3, 4, 7):
            job = stack.job(f"{n}[{i}].pkbs")
            assert job["job_state"] == "X" and "before it ran" in job["comment"], (i, job)
        for command in ("qsig", "qrerun"):
            result = cli(stack, command, f"{n}[5-6]")
            assert (result.returncode, result.stderr) == (
                EXIT_BADSTATE, f"{command}: Request invalid for state of job {n}[5-6].pkbs\n"
            ), result
        for command in ("qhold", "qrls"):
            result = cli(stack, command, f"{n}[5-6]")
            assert result.returncode == EXIT_IVALREQ, result
            assert result.stderr.startswith(f"{command}: Request invalid for a subjob"), result
        unknown = cli(stack, "qdel", f"{n}[7-9]")  # 9 is not in the array
        assert unknown.returncode == 15001 & 0xFF, unknown
        assert cli(stack, "qrls", array).returncode == 0
        stack.wait_state(array, "F")
    finally:
        cli(stack, "qdel", array)
    states = _states(stack, n)
    assert states == {array: "F", **{f"{n}[{i}].pkbs": "X" for i in range(1, 9)}}, states
    assert [stack.job(f"{n}[{i}].pkbs").get("Exit_status") for i in (5, 6, 8)] == [0, 0, 0]


def test_deleted_array_lists_its_subjobs_and_says_what_happened(
    stack: Stack, tmp_path: Path
) -> None:
    """qstat -xt of a deleted array lists every subjob (X), those that never ran
    too; its comment is PBS's "Job Array Began at … and terminated by <user>"."""
    array, n = _qsub_array(stack, "-J", "1-6", input="sleep 30\n")
    states = _wait_running(stack, n, 4)
    never = sorted(j for j, s in states.items() if s == "Q")
    assert never, states
    result = cli(stack, "qdel", array)
    assert (result.returncode, result.stderr) == (0, "")
    job = stack.wait_state(array, "F", timeout=30)
    assert re.fullmatch(
        rf"Job Array Began at \w{{3}} \w{{3}} \d\d at \d\d:\d\d and terminated by {USER}",
        job["comment"],
    ), job["comment"]
    assert job["array_state_count"] == "Queued:0 Running:0 Exiting:0 Expired:6 "
    listed = _states(stack, n)
    assert listed == {array: "F", **{f"{n}[{i}].pkbs": "X" for i in range(1, 7)}}, listed
    full = stack.qstat_json()  # qstat -f -F json -x: the full view lists nothing more
    assert array in full["Jobs"]


def _most_at_once(log: Path) -> int:
    running = most = 0
    for line in log.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    return most


@pytest.mark.parametrize("limit", [["-J", "1-6%2"], ["-J", "1-6", "-W", "max_run_subjobs=2"]])
def test_max_run_subjobs_limits_running_subjobs(
    stack: Stack, tmp_path: Path, limit: list[str]
) -> None:
    """With 4 free slots, at most 2 subjobs of the array run at once, and 2 do."""
    log = tmp_path / "runs"
    script = _append(log, "start $PBS_ARRAY_INDEX") + "sleep 1\n" + _append(
        log, "end $PBS_ARRAY_INDEX"
    )
    array, n = _qsub_array(stack, *limit, input=script)
    assert stack.job(array)["max_run_subjobs"] == 2
    job = stack.wait_state(array, "F", timeout=60)
    assert job["Exit_status"] == 0
    assert sorted(int(line.split()[1]) for line in log.read_text().splitlines()
                  if line.startswith("start")) == [1, 2, 3, 4, 5, 6]
    assert _most_at_once(log) == 2, log.read_text()
