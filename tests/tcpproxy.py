"""A TCP proxy on loopback that a test can cut and heal: a network partition between
one process and the servers it talks to, or a Service's entry point from the host."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from pkbs import servers


class TcpProxy:
    """Forwards a port of 127.0.0.1 to what `backend` names for each new connection
    (host, port; None: refused), one thread per direction of each connection. cut()
    closes every forwarded connection and stops listening, so connects are refused;
    heal() listens on the same port again. Used as a context manager; it also closes
    itself after `lifetime` seconds."""

    def __init__(self, backend: Callable[[], tuple[str, int] | None],
                 lifetime: float = 110.0) -> None:
        self.backend = backend
        self.port = servers.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._closed = False
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True
        self._timer.start()
        self.heal()

    @classmethod
    def to_port(cls, port: int, lifetime: float = 110.0) -> TcpProxy:
        """A proxy of another port of this host."""
        return cls(lambda: ("127.0.0.1", port), lifetime)

    def heal(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        with self._lock:
            if self._closed or self._listener is not None:
                listener.close()
                return
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._open = self._open, set()
        for sock in [listener, *conns] if listener else conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # also wakes a thread blocked in accept
            sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._timer.cancel()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            backend = self.backend()
            try:
                if backend is None:
                    raise ConnectionRefusedError("no backend")
                upstream = socket.create_connection(backend, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                live = self._listener is listener
                if live:
                    self._open |= {client, upstream}
            if not live:  # cut meanwhile
                client.close()
                upstream.close()
                return
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with self._lock:  # one end closed: the connection ends
            self._open -= {src, dst}
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
