"""qsub's start-up path stays light, and its lean HTTP client (cli/client.py) speaks
HTTP/1.1 correctly to a real server: keep-alive, chunked bodies, errors, retries,
servers that close connections, streamed downloads."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pkbs.cli.client import Client, quote_plus, split_endpoint, urlencode

from pkbs.clientconfig import ClientConfig
from pkbs.errors import PkbsError, ServiceUnavailable, UnknownJob

# --------------------------------------------------------------------------- imports

HEAVY = (
    "dataclasses", "inspect", "ast", "http.client", "email", "ssl", "typing",
    "pydantic", "click", "nats", "httpx",
    # qsub needs none of these: b2a_base64, gethostbyaddr with bytes (no idna codec),
    # pkbs.payload only for a directory or an oversize payload.
    "base64", "struct", "encodings.idna", "stringprep", "unicodedata", "pkbs.payload",
    # cli/client.py talks through _socket: socket.py builds four enums at import; the
    # json package imports re and compiles six patterns (pkbs.wirejson calls _json).
    "socket", "selectors", "json",
)  # fmt: skip
# Imported by pkbs/clientconfig.py (a frozen dataclass), not by the PBS syntax or cli/client.py.
VIA_CLIENTCONFIG = {"dataclasses", "inspect", "ast"}


def _modules(out: list[str], names: tuple[str, ...] = HEAVY) -> set[str]:
    return {name for name in names if any(m == name or m.startswith(name + ".") for m in out)}


def _loaded_after(
    code: str, tmp_path: Path, names: tuple[str, ...] = HEAVY, new_only: bool = False
) -> set[str]:
    """Which of `names` are in sys.modules after `code` (with new_only: imported by `code`,
    not already at start-up: this venv's editable-install finder imports re, a wheel's
    installation does not)."""
    probe = (
        f"import sys\nbefore = set(sys.modules)\n{code}\n"
        f"print(' '.join(sorted(set(sys.modules) - before if {new_only} else sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout.split()
    return _modules(out, names)


def test_pbs_syntax_import_is_light(tmp_path: Path) -> None:
    code = "import pkbs.pbsvalues, pkbs.qsuboptions"
    assert _loaded_after(code, tmp_path) == set()
    # They import re where a pattern is matched, not at import: re costs several ms
    # (enum, functools, collections), and `echo true | qsub` matches no pattern. Their
    # immutable values (pkbs.frozen) need no collections either.
    lean = ("re", "enum", "collections")
    assert _loaded_after(code, tmp_path, lean, new_only=True) == set()


def test_qsub_import_is_light(tmp_path: Path) -> None:
    loaded = _loaded_after("import pkbs.cli.qsub", tmp_path)
    assert loaded - VIA_CLIENTCONFIG == set()
    if loaded & VIA_CLIENTCONFIG:
        from_config = _loaded_after("import pkbs.clientconfig", tmp_path)
        assert loaded & VIA_CLIENTCONFIG <= from_config
        pytest.xfail(f"pkbs/clientconfig.py still imports {sorted(from_config)}")


# --------------------------------------------------------------------------- a real server

BLOB = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    announce_close = False  # "Connection: close" on every response
    silent_close = False  # close after every response without saying so

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.log: list[dict[str, Any]] = []
        self.connections: set[tuple[str, int]] = set()
        self.flaky_calls = 0
        self.submitted: list[bytes] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def _reply(self, status: int, body: bytes, *, chunked: bool = False, eof: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not eof:
            self.send_header("Content-Length", str(len(body)))
        if eof or self.server.announce_close:
            self.send_header("Connection", "close")
        self.end_headers()
        if chunked:
            for start in range(0, len(body), 65536):
                piece = body[start : start + 65536]
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        else:
            self.wfile.write(body)
        if self.server.silent_close:
            self.close_connection = True

    def _json(self, status: int, value: object, **kwargs: bool) -> None:
        self._reply(status, json.dumps(value).encode(), **kwargs)

    def _route(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.connections.add(self.client_address)
            self.server.log.append({"path": path, "peer": self.client_address})
            self.server.flaky_calls += path == "/v1/flaky"
            flaky_calls = self.server.flaky_calls
        if path == "/v1/jobs" and self.command == "POST":
            with self.server.lock:
                self.server.submitted.append(body)
            self._json(201, {"job_id": "1.pkbs"})
        elif path == "/v1/echo":
            self._json(
                200,
                {
                    "method": self.command,
                    "query": query,
                    "body": json.loads(body) if body else None,
                    "content_length": self.headers.get("Content-Length"),
                    "content_type": self.headers.get("Content-Type"),
                    "authorization": self.headers.get("Authorization"),
                    "host": self.headers.get("Host"),
                },
            )
        elif path == "/v1/chunked":
            self._json(200, {"items": list(range(50000))}, chunked=True)
        elif path == "/v1/eof":
            self._json(200, {"until": "close"}, eof=True)
        elif path == "/v1/missing":
            error = {"pbs_errno": 15001, "message": "Unknown Job Id", "job_id": "9.pkbs"}
            self._json(404, {"error": error})
        elif path == "/v1/detail":
            self._json(422, {"detail": "bad request"})
        elif path == "/v1/flaky":
            if flaky_calls == 1:
                self._json(503, {"detail": "busy"})
            else:
                self._json(200, {"calls": flaky_calls})
        elif path == "/v1/nothing":
            self.send_response(204)
            self.end_headers()
        elif path == "/v1/blob":
            self._reply(200, BLOB)
        elif path == "/v1/blob-chunked":
            self._reply(200, BLOB, chunked=True)
        else:
            self._json(404, {"detail": "Not Found"})


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _client(srv: _Server, base: str = "") -> Client:
    host, port = srv.server_address[:2]
    return Client(ClientConfig(f"http://{host}:{port}{base}", "tok"))


def test_json_round_trip_and_request_encoding(server: _Server) -> None:
    client = _client(server)
    query = {"a": "x y/&=é", "n": 3, "ids": ["1.pkbs", "2[].pkbs"], "t": True}
    got = client.request("POST", "/echo", {"k": ["v", 1]}, query=query)
    assert got["method"] == "POST"
    assert got["query"] == urllib.parse.urlencode(query, doseq=True)
    assert got["body"] == {"k": ["v", 1]}
    assert got["content_type"] == "application/json"
    assert got["authorization"] == "Bearer tok"
    assert got["host"] == f"127.0.0.1:{server.server_address[1]}"
    empty = client.request("POST", "/echo")
    assert empty["content_length"] == "0" and empty["body"] is None
    assert client.request("DELETE", "/echo")["content_length"] is None
    client.close()


def test_keep_alive_over_several_requests(server: _Server) -> None:
    client = _client(server)
    assert client.request("GET", "/chunked")["items"] == list(range(50000))
    with pytest.raises(UnknownJob):
        client.request("GET", "/missing")
    assert client.request("DELETE", "/nothing") is None
    for _ in range(3):
        assert client.request("GET", "/echo")["method"] == "GET"
    assert len(server.log) == 6
    assert len(server.connections) == 1
    client.close()


def test_chunked_and_read_to_close_bodies(server: _Server) -> None:
    client = _client(server)
    assert client.request("GET", "/eof") == {"until": "close"}  # then a new connection
    assert client.request("GET", "/chunked")["items"][-1] == 49999
    assert client.request("GET", "/eof") == {"until": "close"}
    assert len(server.connections) == 2
    client.close()


def test_error_mapping(server: _Server) -> None:
    client = _client(server)
    with pytest.raises(UnknownJob) as info:
        client.request("GET", "/missing")
    err = info.value
    assert (err.http_status, err.pbs_errno, err.message, err.job_id) == (
        404,
        15001,
        "Unknown Job Id",
        "9.pkbs",
    )
    assert str(err) == "Unknown Job Id 9.pkbs"
    with pytest.raises(PkbsError) as info:
        client.request("GET", "/detail")
    assert info.value.http_status == 422
    assert str(info.value) == "Request failed (422): bad request"
    client.close()


def test_503_is_retried(server: _Server) -> None:
    client = _client(server)
    assert client.request("GET", "/flaky") == {"calls": 2}
    assert len(server.connections) == 1  # the 503 did not cost the connection
    client.close()


@pytest.mark.parametrize("mode", ["announce_close", "silent_close"])
def test_server_closing_after_each_response(server: _Server, mode: str) -> None:
    setattr(server, mode, True)
    client = _client(server)
    paths = ["/echo", "/chunked", "/missing", "/echo", "/flaky", "/echo"]
    for path in paths:
        try:
            client.request("GET", path, retries=0 if path != "/flaky" else 1)
        except UnknownJob as err:
            assert err.http_status == 404
    expected = ["/echo", "/chunked", "/missing", "/echo", "/flaky", "/flaky", "/echo"]
    assert [entry["path"] for entry in server.log] == ["/v1" + p for p in expected]
    assert len(server.connections) == len(server.log)  # one connection per request
    client.close()


def test_connection_refused_is_service_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Client(ClientConfig(f"http://127.0.0.1:{port}", "tok"))
    with pytest.raises(ServiceUnavailable) as info:
        client.request("GET", "/jobs", retries=0)
    assert str(info.value).startswith(f"cannot connect to server http://127.0.0.1:{port} (")


@pytest.mark.parametrize("path", ["/blob", "/blob-chunked"])
def test_download_with_progress(server: _Server, tmp_path: Path, path: str) -> None:
    client = _client(server)
    seen: list[int] = []
    target = tmp_path / "out.bin"
    client.download(path, target, seen.append)
    assert target.read_bytes() == BLOB
    assert sum(seen) == len(BLOB) and len(seen) > 1
    assert not (tmp_path / "out.bin.part").exists()
    assert client.request("GET", "/echo")["method"] == "GET"  # same connection, after it
    assert len(server.connections) == 1
    with pytest.raises(UnknownJob) as info:
        client.download("/missing", tmp_path / "x", None)
    assert (info.value.http_status, str(info.value)) == (404, "Unknown Job Id 9.pkbs")
    client.close()


def test_base_path_of_the_endpoint(server: _Server) -> None:
    client = _client(server, "/prefix/")
    with pytest.raises(PkbsError) as info:
        client.request("GET", "/echo")
    assert info.value.http_status == 404
    assert server.log[-1]["path"] == "/prefix/v1/echo"


def test_client_at_runtime_stays_off_http_client(server: _Server, tmp_path: Path) -> None:
    host, port = server.server_address[:2]
    code = (
        "import sys\n"
        "from pkbs.cli.client import Client\n"
        "from pkbs.clientconfig import ClientConfig\n"
        f"c = Client(ClientConfig('http://{host}:{port}', 't'))\n"
        "assert c.request('GET', '/chunked')['items'][:2] == [0, 1]\n"
        "heavy = ('http.client', 'ssl', 'email', 'encodings.idna')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]"


def test_https_uses_http_client() -> None:
    client = Client(ClientConfig("https://Example.invalid:8443/base/", "tok"))
    conn = client._connection()
    assert isinstance(conn, http.client.HTTPSConnection)
    assert (conn.host, conn.port, client.base) == ("example.invalid", 8443, "/base")
    client.close()


def test_qsub_run_stays_light(server: _Server, tmp_path: Path) -> None:
    """A whole `echo true | qsub`, not only its imports: no base64, no idna codec (from
    socket.getfqdn with a str host name), and the request carries what it did with them."""
    host, port = server.server_address[:2]
    # stderr: every module loaded, then (second line) those qsub itself loaded.
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from pkbs.cli.qsub import main\n"
        "main([])\n"
        "sys.stderr.write(' '.join(sorted(sys.modules)) + '\\n')\n"
        "sys.stderr.write(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    env = {**os.environ, "PKBS_ENDPOINT": f"http://{host}:{port}", "PKBS_TOKEN": "tok"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input="true\n",
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout == "1.pkbs\n"
    loaded, by_qsub = out.stderr.split("\n")
    assert _modules(loaded.split()) - VIA_CLIENTCONFIG == set()
    # Nothing on the path imports re: with a wrapper that does not either (uv's, or a
    # plain script), `echo true | qsub` never loads enum, functools or collections.
    assert _modules(by_qsub.split(), ("re", "enum")) == set()
    (body,) = server.submitted
    request = json.loads(body)
    assert base64.b64decode(request["payload_b64"], validate=True) == b"true\n"
    host = request["spec"]["submit_host"]
    assert request["spec"]["variables"]["PBS_O_HOST"] == host
    assert host in (socket.getfqdn(), socket.gethostname()) and host != "localhost"


def test_qsub_payload_encoding_and_host_match_the_stdlib() -> None:
    from pkbs.cli import qsub

    from pkbs import qsuboptions

    options = qsuboptions.parse_qsub_args([])[0]
    data = bytes(range(256)) * 3 + b"x"
    source = qsub.Source("file", "a.out", "a.out", "", data)
    request = qsub.build_request(options, source, ["a.out"])
    assert request["payload_b64"] == base64.b64encode(data).decode()
    fqdn = socket.getfqdn()
    assert qsub.submit_host() == (socket.gethostname() if fqdn == "localhost" else fqdn)


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True, False, 'é\n"x\\\u2028\ud800'], "b": {}, "c": []},
        [],
        "x",
        1e300,
        -0.0,
        10**30,
        {"k": {"n": [1, [2, [3]]]}, "": 0},
    ],
)
def test_wirejson_is_json(value: Any) -> None:
    from pkbs import wirejson

    text = json.dumps(value)
    assert wirejson.dumps(value) == text
    for data in (text, text.encode(), f" \n{text}\t ", b"\xef\xbb\xbf" + text.encode()):
        assert repr(wirejson.loads(data)) == repr(json.loads(data))


@pytest.mark.parametrize("text", ["", "  ", "{", "[1,]", "1 2", '{"a" 1}', "nul", '"\x01"'])
def test_wirejson_rejects_what_json_rejects(text: str) -> None:
    from pkbs import wirejson

    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        wirejson.loads(text)


def test_wirejson_refuses_what_json_refuses() -> None:
    from pkbs import wirejson

    for value in ({"a": object()}, {1j: 1}):
        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            wirejson.dumps(value)


# --------------------------------------------------------------------------- URL helpers


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8000",
        "http://LocalHost:8000/api/",
        "https://pkbs.example.com",
        "http://pkbs.example.com/a/b?x=1#frag",
        "http://user:pw@host:81",
        "http://[::1]:8080/p",
        "http://[fe80::1]",
    ],
)
def test_split_endpoint_matches_urlsplit(endpoint: str) -> None:
    url = urllib.parse.urlsplit(endpoint)
    https = url.scheme == "https"
    expected = (https, url.hostname, url.port or (443 if https else 80), url.path.rstrip("/"))
    assert split_endpoint(endpoint) == expected


def test_split_endpoint_rejects_bad_port() -> None:
    with pytest.raises(ValueError):
        split_endpoint("http://host:port")


@pytest.mark.parametrize("text", ["", "abc", "a b+c/d?e&f=g%h", "é日本~_.-", "\x00\x7f", "[1]"])
def test_quote_plus_matches_urllib(text: str) -> None:
    assert quote_plus(text) == urllib.parse.quote_plus(text, safe="")
    assert quote_plus(text.encode()) == urllib.parse.quote_plus(text.encode(), safe="")


def test_urlencode_matches_urllib() -> None:
    query: dict[str, Any] = {
        "state": "F",
        "ids": ("1.pkbs", "2[3].pkbs"),
        "n": 10,
        "flag": False,
        "empty": [],
        "x y": b"b\xffytes",
    }
    assert urlencode(query) == urllib.parse.urlencode(query, doseq=True)
