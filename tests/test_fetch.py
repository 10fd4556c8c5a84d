"""`pkbs fetch` brings back a job's .o/.e and the files it created or changed (not its
unchanged inputs), large files with a progress bar on stderr; `qstat -f` names the
finishing run's `results_url`; another user's fetch is refused."""

from __future__ import annotations

import getpass
import hashlib
import re
from pathlib import Path

from tests.stackutil import (
    Stack,
    cli,
    fetch_results,
    files_under,
    job_number,
    submit,
    wait_state_as,
    write_file,
)


def test_fetch_outputs_and_changed_files_only(stack: Stack, tmp_path: Path) -> None:
    job = tmp_path / "job"
    write_file(job / "run.sh", "#!/bin/bash\n"
               "echo created > new.txt\n"
               "mkdir -p sub/deeper && echo nested > sub/deeper/made.txt\n"
               "echo changed >> edit.txt\n"
               "cat keep.txt\n", 0o755)
    write_file(job / "keep.txt", "unchanged input\n")
    write_file(job / "edit.txt", "original\n")
    write_file(job / "sub" / "input.dat", "payload in a subdirectory\n")
    job_id = submit(stack, "-N", "res", str(job))
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    seq = job_number(job_id)
    dest = tmp_path / "results"
    result = fetch_results(stack, job_id, dest)
    assert result.stderr == ""  # no progress for small files
    expected = {
        f"res.o{seq}": len("unchanged input\n"),
        f"res.e{seq}": 0,
        "new.txt": len("created\n"),
        "edit.txt": len("original\nchanged\n"),
        "sub/deeper/made.txt": len("nested\n"),
    }
    assert files_under(dest) == expected
    assert sorted(result.stdout.splitlines()) == sorted(str(dest / n) for n in expected)
    assert (dest / f"res.o{seq}").read_text() == "unchanged input\n"
    assert (dest / "edit.txt").read_text() == "original\nchanged\n"
    assert (dest / "sub" / "deeper" / "made.txt").read_text() == "nested\n"


def test_large_file_round_trips_with_progress(stack: Stack, tmp_path: Path) -> None:
    script = "dd if=/dev/urandom of=big.bin bs=1M count=3 2>/dev/null\nsha256sum big.bin\n"
    job_id = submit(stack, "-N", "big", input=script)
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    result = fetch_results(stack, job_id, tmp_path)
    data = (tmp_path / "big.bin").read_bytes()
    assert len(data) == 3 * 1024 * 1024
    printed = (tmp_path / f"big.o{job_number(job_id)}").read_text()
    assert printed == f"{hashlib.sha256(data).hexdigest()}  big.bin\n"
    assert "big.bin" in result.stderr  # the progress bar, on stderr
    assert "big.o" not in result.stderr  # small files have none


def test_full_status_shows_results_url(stack: Stack) -> None:
    job_id = submit(stack, "-N", "where", input="true\n")
    stack.wait_state(job_id, "F")
    result = cli(stack, "qstat", "-x", "-f", job_id)
    assert result.returncode == 0
    urls = re.findall(r"^    results_url = (\S+)$", result.stdout, re.MULTILINE)
    assert len(urls) == 1, result.stdout
    assert re.fullmatch(rf"https?://[^/]+/pkbs/{re.escape(getpass.getuser())}/"
                        rf"{re.escape(job_id)}/run-1/", urls[0]), urls[0]
    assert stack.job(job_id)["results_url"] == urls[0]


def test_fetch_of_other_users_job_is_refused(stack: Stack, tmp_path: Path) -> None:
    alice, bob = stack.as_user("alice"), stack.as_user("bob")
    job_id = submit(stack, "-N", "secret", input="echo alice only\n", env=alice)
    dest = tmp_path / "stolen"
    refused = cli(stack, "pkbs", "fetch", job_id, str(dest), env=bob)
    assert refused.returncode == 15007 & 0xFF
    assert (refused.stdout, refused.stderr) == ("", f"pkbs fetch: Unauthorized Request {job_id}\n")
    assert not dest.exists()
    # alice herself gets it.
    wait_state_as(stack, job_id, "F", alice)
    fetch_results(stack, job_id, tmp_path / "mine", env=alice)
    assert (tmp_path / "mine" / f"secret.o{job_number(job_id)}").read_text() == "alice only\n"


# -- where results land, as PBS puts them ----------------------------------------------


def test_local_stack_puts_outputs_where_pbs_does(stack: Stack, tmp_path: Path) -> None:
    """No -o: <submit dir>/<name>.o<seq>; -o a file path; -e an existing directory:
    <dir>/<job id>.ER; -j oe: one file. The WebDAV copy stays."""
    (tmp_path / "errs").mkdir()
    plain = submit(stack, "-N", "where", input="echo out; echo err >&2\n", cwd=tmp_path)
    placed = submit(stack, "-N", "placed", "-o", str(tmp_path / "logs.out"),
                    "-e", f"{tmp_path / 'errs'}/", input="echo out; echo err >&2\n",
                    cwd=tmp_path)
    joined = submit(stack, "-N", "joined", "-j", "oe", input="echo out; echo err >&2\n",
                    cwd=tmp_path)
    # Over INLINE_COPY_BYTES: copied in a thread of the worker's, whole.
    large = submit(stack, "-N", "large", input="head -c 400000 /dev/zero | tr '\\0' x\n",
                   cwd=tmp_path)
    for job_id in (plain, placed, joined, large):
        assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    assert (tmp_path / f"large.o{job_number(large)}").read_text() == "x" * 400_000
    n = job_number(plain)
    assert (tmp_path / f"where.o{n}").read_text() == "out\n"
    assert (tmp_path / f"where.e{n}").read_text() == "err\n"
    assert (tmp_path / "logs.out").read_text() == "out\n"
    assert (tmp_path / "errs" / f"{placed}.ER").read_text() == "err\n"
    j = job_number(joined)
    assert (tmp_path / f"joined.o{j}").read_text() == "out\nerr\n"
    assert not (tmp_path / f"joined.e{j}").exists()
    assert cli(stack, "pkbs", "fetch", plain, str(tmp_path / "copy")).returncode == 0
    assert (tmp_path / "copy" / f"where.o{n}").read_text() == "out\n"


def test_fetch_without_dest_follows_output_path_and_submit_dir(
    stack: Stack, tmp_path: Path
) -> None:
    submitted, elsewhere = tmp_path / "submitted", tmp_path / "elsewhere"
    submitted.mkdir()
    elsewhere.mkdir()
    job_id = submit(stack, "-N", "back", "-o", str(tmp_path / "out.log"),
                    input="echo made > made.txt; echo out\n", cwd=submitted)
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    (tmp_path / "out.log").unlink()  # as if delivered nowhere (a cluster's worker)
    result = cli(stack, "pkbs", "fetch", job_id, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.log").read_text() == "out\n"
    assert (submitted / "made.txt").read_text() == "made\n"
    assert files_under(elsewhere) == {}


def test_fetch_refuses_to_overwrite_unless_forced(stack: Stack, tmp_path: Path) -> None:
    job_id = submit(stack, "-N", "clob", input="echo new > data.txt\n")
    assert stack.wait_state(job_id, "F")["Exit_status"] == 0
    dest = tmp_path / "dest"
    write_file(dest / "data.txt", "mine\n")
    result = cli(stack, "pkbs", "fetch", job_id, str(dest))
    assert result.returncode == 15004 & 0xFF, result.stderr  # PBSE_IVALREQ
    assert result.stderr == (
        "pkbs fetch: refusing to overwrite 1 existing file (--force overwrites them):\n"
        f"  {dest / 'data.txt'}\n")
    assert (dest / "data.txt").read_text() == "mine\n"
    assert files_under(dest) == {"data.txt": 5}  # nothing else written either
    forced = cli(stack, "pkbs", "fetch", "--force", job_id, str(dest))
    assert forced.returncode == 0, forced.stderr
    assert (dest / "data.txt").read_text() == "new\n"
    again = cli(stack, "pkbs", "fetch", job_id, str(dest))  # the same files: no conflict
    assert again.returncode == 0, again.stderr


def test_fetch_of_an_unfinished_job_says_why(stack: Stack, tmp_path: Path) -> None:
    job_id = submit(stack, "-h", input="true\n")
    try:
        result = cli(stack, "pkbs", "fetch", job_id, str(tmp_path))
        assert (result.returncode, result.stdout) == (15016 & 0xFF, "")  # PBSE_BADSTATE
        assert result.stderr == (
            f"pkbs fetch: Request invalid for state of job {job_id}: it is held (H); "
            "its results are stored when it ends\n")
    finally:
        cli(stack, "qdel", job_id)


def test_fetch_of_an_array_fetches_each_subjob(stack: Stack, tmp_path: Path) -> None:
    array = stack.qsub("-N", "arr", "-J", "1-2", input="echo $PBS_ARRAY_INDEX\n")
    assert stack.wait_state(array, "F")["Exit_status"] == 0
    n = int(array.split("[", 1)[0])
    result = cli(stack, "pkbs", "fetch", array, str(tmp_path))
    assert result.returncode == 0, result.stderr
    for index in (1, 2):
        sub = array.replace("[]", f"[{index}]")
        assert (tmp_path / sub / f"arr.o{n}.{index}").read_text() == f"{index}\n"
