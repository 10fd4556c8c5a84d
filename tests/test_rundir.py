"""A run's directories (worker/rundir.py): reused only when the job left them as they
were handed out, so every job starts in an empty private directory."""

from __future__ import annotations

import os
from pathlib import Path

from pkbs.worker.rundir import DirPool, NodeFiles, RunDir

from pkbs.models import JobRecord, JobSpec
from pkbs.states import JobState


def _record(ncpus: int = 1) -> JobRecord:
    spec = JobSpec(name="j", kind="stdin", entrypoint="STDIN", resources={"ncpus": str(ncpus)})
    return JobRecord(number=7, server="pkbs", owner="u", spec=spec, state=JobState.RUNNING,
                     submit_id="s" * 16)


def test_a_directory_the_job_emptied_of_files_is_used_again_empty(tmp_path: Path) -> None:
    pool = DirPool(tmp_path)
    first = pool.take()
    (first / "out.txt").write_text("data")
    os.symlink("/etc/passwd", first / "link")
    pool.give_back(first)
    assert pool.take() == first
    assert list(first.iterdir()) == []
    assert oct(first.stat().st_mode & 0o777) == "0o700"


def test_a_directory_with_subdirectories_or_another_mode_is_not_reused(tmp_path: Path) -> None:
    pool = DirPool(tmp_path)
    nested, opened, replaced = pool.take(), pool.take(), pool.take()
    (nested / "sub").mkdir()
    (nested / "sub" / "f").write_text("x")
    opened.chmod(0o777)
    replaced.rmdir()
    replaced.write_text("a file where the directory was")
    for path in (nested, opened, replaced):
        pool.give_back(path)
    assert not nested.exists() and not opened.exists()
    fresh = pool.take()
    assert fresh not in (nested, opened) and list(fresh.iterdir()) == []


def test_run_files_and_node_files(tmp_path: Path) -> None:
    pool, nodes = DirPool(tmp_path), NodeFiles(tmp_path, "node1")
    run = RunDir(pool, nodes, "7", _record(3), "a" * 32)
    assert run.job != run.tmp and run.stdout.name == "7.aaaaaaaaaaaa.o"
    assert run.nodefile.read_text() == "node1\n" * 3
    run.stdout.write_text("out")
    run.cleanup()
    assert not run.stdout.exists()
    run.nodefile.chmod(0o644)
    run.nodefile.write_text("tampered\n")  # a job of the same uid
    again = RunDir(pool, nodes, "8", _record(3), "b" * 32)
    assert again.nodefile.read_text() == "node1\n" * 3
    assert {again.job, again.tmp} == {run.job, run.tmp}
