"""The init container of a job's pod (worker/podinit.py), offline: it fetches the
payload from a stand-in dispatcher and lays it out with the worker's safe unpacking,
so a payload that would write outside the job directory is refused (exit 2, nothing
written), and a dispatcher that refuses is not asked again (exit 3)."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pkbs.worker import podinit
from pkbs.worker.podfiles import (
    BEFORE,
    EXIT_PAYLOAD_NOT_FETCHED,
    EXIT_PAYLOAD_REFUSED,
    NODEFILE,
)

from pkbs import constants as C
from pkbs.errors import InvalidPayload
from pkbs.payload import build_from_directory

TOKEN = "pkbsjob.test.token"


class Dispatcher:
    """Answers GET /v1/jobs/<id>/payload with what the test sets."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append((self.path, self.headers.get("Authorization", "")))
                status, headers, body = owner.answers.pop(0) if owner.answers else (
                    404, {}, b"{}")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payload(self, data: bytes, fmt: str = "zip", entry: str = "run.sh") -> None:
        headers = {C.PAYLOAD_FORMAT_HEADER: fmt, C.ENTRYPOINT_HEADER: entry}
        self.answers.append((200, headers, data))


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    d = Dispatcher()
    yield d
    d.server.shutdown()
    d.server.server_close()


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dispatcher: Dispatcher) -> Path:
    """A job directory and control directory as the pod has them (emptyDirs)."""
    for name in ("job", "control"):
        (tmp_path / name).mkdir()
    for name, value in (("PBS_JOBID", "7[3].pkbs"), ("PKBS_ENDPOINT", dispatcher.endpoint),
                        ("PKBS_TOKEN", TOKEN), ("NCPUS", "3")):
        monkeypatch.setenv(name, value)
    return tmp_path


def run(pod: Path) -> int:
    return podinit.main([str(pod / "job"), str(pod / "control")])


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_a_payload_is_laid_out_as_the_worker_does(
    pod: Path, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "run.sh").write_text("echo hi\n")
    (project / "run.sh").chmod(0o755)
    (project / "data" / "in.txt").write_text("42\n")
    dispatcher.payload(build_from_directory(project))
    assert run(pod) == 0
    assert dispatcher.requests == [
        (f"{C.API_PREFIX}/jobs/7%5B3%5D.pkbs/payload", f"Bearer {TOKEN}")
    ]
    assert (pod / "job" / "data" / "in.txt").read_text() == "42\n"
    assert (pod / "control" / NODEFILE).read_text().splitlines() == [
        (pod / "control" / NODEFILE).read_text().splitlines()[0]
    ] * 3
    before = json.loads((pod / "control" / BEFORE).read_text())
    assert set(before) == {"run.sh", "data/in.txt"}


def test_a_single_file_payload_is_written_executable(pod: Path, dispatcher: Dispatcher) -> None:
    dispatcher.payload(b"echo from stdin\n", "file", "STDIN")
    assert run(pod) == 0
    entry = pod / "job" / "STDIN"
    assert entry.read_bytes() == b"echo from stdin\n"
    assert entry.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    "payload",
    [
        zip_of({"run.sh": b"true\n", "../escaped": b"owned\n"}),
        zip_of({"run.sh": b"true\n", "/tmp/absolute-escape": b"owned\n"}),
        zip_of({"run.sh": b"true\n", "a/../../escaped": b"owned\n"}),
    ],
    ids=["dot-dot", "absolute", "nested-dot-dot"],
)
def test_a_zip_slip_payload_is_refused(pod: Path, dispatcher: Dispatcher, payload: bytes) -> None:
    dispatcher.payload(payload)
    assert run(pod) == EXIT_PAYLOAD_REFUSED
    assert not (pod / "escaped").exists()
    assert not Path("/tmp/absolute-escape").exists()
    assert list((pod / "job").iterdir()) == [], "nothing of it is kept"
    assert not (pod / "control" / BEFORE).exists()


def test_a_symlink_out_of_the_job_directory_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        link = zipfile.ZipInfo("etc")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc")
        zf.writestr("run.sh", "true\n")
    (tmp_path / "job").mkdir()
    with pytest.raises(InvalidPayload):
        podinit.lay_out(buffer.getvalue(), "zip", "run.sh", tmp_path / "job")


@pytest.mark.parametrize("entry", ["", "a/b", "..", "."])
def test_a_file_payload_must_name_one_file(tmp_path: Path, entry: str) -> None:
    with pytest.raises(InvalidPayload):
        podinit.lay_out(b"true\n", "file", entry, tmp_path)


def test_a_refusal_is_final_and_unavailability_is_waited_out(
    pod: Path, dispatcher: Dispatcher
) -> None:
    dispatcher.answers.append((403, {}, b'{"error": {"message": "Unauthorized Request"}}'))
    assert run(pod) == EXIT_PAYLOAD_NOT_FETCHED
    assert len(dispatcher.requests) == 1
    dispatcher.answers.append((503, {}, b"busy"))
    dispatcher.payload(b"true\n", "file", "STDIN")
    data, fmt, entry = podinit.fetch(dispatcher.endpoint, "7.pkbs", TOKEN, patience=10)
    assert (data, fmt, entry) == (b"true\n", "file", "STDIN")
    with pytest.raises(podinit.NotFetched, match="unreachable"):
        podinit.fetch("http://127.0.0.1:9", "7.pkbs", TOKEN, patience=0.1)
