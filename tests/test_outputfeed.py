"""The pieces of live output that need no stack: how a worker reads a job's output
file (worker/outputfeed.py), the dispatcher's --tail (dispatcher/outputroutes.py) and
the CLI's reading of server-sent events (cli/logs.py)."""

from __future__ import annotations

from pathlib import Path

from pkbs.cli.logs import sse_events
from pkbs.dispatcher.outputroutes import Chunk, Ended, Failed, as_sse, last_lines
from pkbs.worker.outputfeed import _Source, skipped_line

from pkbs.models import JobRecord, JobSpec
from pkbs.states import JobState


def test_reads_what_is_new_each_time(tmp_path: Path) -> None:
    out = tmp_path / "w0.o"
    source = _Source(out, "pkbs.output.1.stdout")
    assert source.read_new(100) == b""  # not there yet
    out.write_bytes(b"one\n")
    assert source.read_new(100) == b"one\n"
    assert source.read_new(100) == b""
    with open(out, "ab") as fh:
        fh.write(b"two\nthr")
    assert source.read_new(100) == b"two\nthr"
    source.close()


def test_more_than_a_read_carries_keeps_the_newest_from_a_line_start(tmp_path: Path) -> None:
    out = tmp_path / "w0.o"
    lines = b"".join(b"line %03d\n" % i for i in range(100))  # 9 bytes a line
    out.write_bytes(lines)
    source = _Source(out, "s")
    data = source.read_new(50)
    # The last 50 bytes start inside a line: that line's rest is skipped too.
    assert data == skipped_line(900 - 45) + lines[-45:]
    assert data.endswith(b"line 099\n") and data.count(b"\n") == 6
    assert source.read_new(50) == b""
    source.close()


def test_last_lines() -> None:
    assert last_lines(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert last_lines(b"a\nb\nc", 2) == b"b\nc"  # an unfinished line counts
    assert last_lines(b"a\n", 5) == b"a\n"
    assert last_lines(b"a\n", 0) == b""


def test_events_as_sent_and_as_read() -> None:
    record = JobRecord(number=3, server="pkbs", owner="alice", state=JobState.FINISHED,
                       submit_id="x", exit_status=271, spec=JobSpec(name="j", kind="file",
                                                                    entrypoint="j"))
    body = [as_sse(Chunk(b"caf\xc3\xa9\rdone\n\n", "12")), b": keepalive\n\n",
            as_sse(Failed("no", 15016)), as_sse(Ended(record))]
    wire = b"".join(body)
    # However the bytes are cut on the way, the same events come out.
    pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    assert list(sse_events(pieces)) == [
        ("output", '"caf\\u00e9\\rdone\\n\\n"'),
        ("error", '{"message": "no", "pbs_errno": 15016}'),
        ("end", '{"job_state": "F", "Exit_status": 271}'),
    ]
