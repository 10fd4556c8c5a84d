"""A job pod's results on their way to the worker (worker/podarchive.py and `podkeeper
pack`): what the job created or changed, its stdout and stderr and what it used reach
the run's directory, where the worker's usual delivery finds them as changed files;
and an archive from a hostile pod writes nothing outside the job directory."""

from __future__ import annotations

import base64
import io
import json
import os
import string
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from pkbs.worker.podarchive import (
    END,
    ArchiveError,
    Usage,
    receive_results,
    write_results,
)
from pkbs.worker.podfiles import BEFORE, STDERR, STDOUT, USAGE

from pkbs.payload import build_from_directory, changed_files, safe_unpack, snapshot


def lay_out_payload(project: Path, *job_dirs: Path) -> dict[str, tuple[int, int]]:
    """The same payload unpacked in the pod's and the worker's job directory."""
    data = build_from_directory(project)
    for job_dir in job_dirs:
        safe_unpack(data, job_dir)
    return snapshot(job_dirs[0])


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, tuple[int, int]]]:
    """(pod job dir, pod control dir, worker job dir, the worker's snapshot)."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "run.sh").write_text("echo hi\n")
    (project / "data" / "in.txt").write_text("input\n")
    (project / "data" / "kept.txt").write_text("unchanged\n")
    pod_job, control, worker_job = tmp_path / "pod-job", tmp_path / "control", tmp_path / "w0"
    for d in (pod_job, control, worker_job):
        d.mkdir()
    lay_out_payload(project, pod_job, worker_job)
    before = {rel: list(sig) for rel, sig in snapshot(pod_job).items()}
    (control / BEFORE).write_text(json.dumps(before))
    return pod_job, control, worker_job, snapshot(worker_job)


def pack(pod_job: Path, control: Path) -> bytes:
    out = io.BytesIO()
    write_results(out, pod_job, control)
    return out.getvalue()


def test_changed_files_outputs_and_usage_reach_the_run(
    sides: tuple[Path, Path, Path, dict[str, tuple[int, int]]], tmp_path: Path
) -> None:
    pod_job, control, worker_job, worker_before = sides
    # What the job did in its pod:
    (pod_job / "data" / "in.txt").write_text("changed by the job\n")
    (pod_job / "result.csv").write_text("a,b\n1,2\n")
    (pod_job / "output").mkdir()
    (pod_job / "output" / "plot.txt").write_text("plot\n")
    (pod_job / "data" / "link").symlink_to("/etc/passwd")
    (control / STDOUT).write_text("hello from the pod\n")
    (control / STDERR).write_text("a warning\n")
    (control / USAGE).write_text(json.dumps({"cpu_seconds": 1.5, "max_rss_bytes": 2048 * 1024}))

    stdout, stderr = tmp_path / "w0.o", tmp_path / "w0.e"
    usage = receive_results(io.BytesIO(pack(pod_job, control)), worker_job, stdout, stderr)
    assert usage == Usage(cpu_seconds=1.5, max_rss_bytes=2048 * 1024)
    assert stdout.read_text() == "hello from the pod\n"
    assert stderr.read_text() == "a warning\n"
    assert (worker_job / "result.csv").read_text() == "a,b\n1,2\n"
    assert (worker_job / "output" / "plot.txt").read_text() == "plot\n"
    assert (worker_job / "data" / "in.txt").read_text() == "changed by the job\n"
    assert not (worker_job / "data" / "link").exists(), "symlinks are not results"
    # The worker's delivery sees exactly what the job created or changed.
    assert changed_files(worker_job, worker_before) == [
        "data/in.txt", "output/plot.txt", "result.csv"
    ]


def test_joined_output_keeps_stdout(
    sides: tuple[Path, Path, Path, dict[str, tuple[int, int]]], tmp_path: Path
) -> None:
    pod_job, control, worker_job, _ = sides
    (control / STDOUT).write_text("both streams\n")
    (control / STDERR).write_text("written by the job itself\n")
    joined = tmp_path / "w0.o"
    receive_results(io.BytesIO(pack(pod_job, control)), worker_job, joined, joined)
    assert joined.read_text() == "both streams\n"


def test_keeper_pack_command_writes_the_archive(
    sides: tuple[Path, Path, Path, dict[str, tuple[int, int]]], tmp_path: Path
) -> None:
    """`python -m pkbs.worker.podkeeper pack` as the worker runs it through exec."""
    pod_job, control, worker_job, _ = sides
    (pod_job / "new.txt").write_text("new\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pkbs.worker.podkeeper", "pack", str(pod_job), str(control)],
        capture_output=True, timeout=60, check=True)
    base64_text = (string.ascii_letters + string.digits + "+/=\n").encode()
    assert set(proc.stdout) <= set(base64_text), "text, for the exec API's channel"
    receive_results(io.BytesIO(proc.stdout), worker_job, tmp_path / "o", tmp_path / "e")
    assert (worker_job / "new.txt").read_text() == "new\n"


def hostile(*members: tuple[str, bytes] | tarfile.TarInfo, end: bool = True) -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            info = tarfile.TarInfo(member[0])
            info.size = len(member[1])
            tar.addfile(info, io.BytesIO(member[1]))
        if end:
            tar.addfile(tarfile.TarInfo(END))
    return io.BytesIO(base64.encodebytes(raw.getvalue()))


@pytest.mark.parametrize("name", ["job/../escaped", "job//etc/escaped", "job/a/../../escaped",
                                  "job/", "job/a\nb"])
def test_names_outside_the_job_directory_are_refused(tmp_path: Path, name: str) -> None:
    job = tmp_path / "w0"
    job.mkdir()
    with pytest.raises(ArchiveError):
        receive_results(hostile((name, b"owned\n")), job, tmp_path / "o", tmp_path / "e")
    assert not (tmp_path / "escaped").exists()


def test_nothing_is_written_through_a_symlink(tmp_path: Path) -> None:
    job, outside = tmp_path / "w0", tmp_path / "outside"
    job.mkdir()
    outside.mkdir()
    (outside / "target").write_text("precious\n")
    (job / "dir").symlink_to(outside)
    (job / "file").symlink_to(outside / "target")
    with pytest.raises(ArchiveError):
        receive_results(hostile(("job/dir/target", b"owned\n")), job, tmp_path / "o",
                        tmp_path / "e")
    # A file where the payload had a symlink replaces the symlink, not its target.
    receive_results(hostile(("job/file", b"the job's\n")), job, tmp_path / "o", tmp_path / "e")
    assert (outside / "target").read_text() == "precious\n"
    assert not (job / "file").is_symlink() and (job / "file").read_text() == "the job's\n"


def test_links_and_devices_are_not_taken(tmp_path: Path) -> None:
    job = tmp_path / "w0"
    job.mkdir()
    link = tarfile.TarInfo("job/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("job/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    fifo = tarfile.TarInfo("job/fifo")
    fifo.type = tarfile.FIFOTYPE
    receive_results(hostile(link, hard, fifo), job, tmp_path / "o", tmp_path / "e")
    assert os.listdir(job) == []


def test_an_archive_cut_short_or_garbled_is_an_error(tmp_path: Path) -> None:
    job = tmp_path / "w0"
    job.mkdir()
    with pytest.raises(ArchiveError, match="cut short"):
        receive_results(hostile(("job/a", b"x"), end=False), job, tmp_path / "o", tmp_path / "e")
    whole = hostile(("job/a", b"x" * 100_000)).getvalue()
    with pytest.raises(ArchiveError):
        receive_results(io.BytesIO(whole[: len(whole) // 2]), job, tmp_path / "o",
                        tmp_path / "e")
    with pytest.raises(ArchiveError, match="not base64"):
        receive_results(io.BytesIO(b"this is not an archive!"), job, tmp_path / "o",
                        tmp_path / "e")
