"""The server's configuration in KV `PKBS_CONFIG`, followed live.

- `server`: the ServerConfig (server attributes and queues, pkbs/serverconfig.py), one
  value so that a qmgr change of several attributes is one compare-and-set.
- `hook.<name>`: one key per hook (its attributes and script; pkbs/hookstore.py).

Every dispatcher and worker opens the store and follows the bucket: `config` is always
the last stored ServerConfig, and `changed` is set on each change, so a qmgr change is
in effect everywhere within a message's delay and no one restarts. An empty store is
seeded from the settings (`PKBS_QUEUES`) by whoever opens it first (a create: two at
once store one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js import errors as jserr
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from pkbs import constants as C
from pkbs.errors import Conflict
from pkbs.serverconfig import ServerConfig
from pkbs.settings import Settings

log = logging.getLogger(__name__)

SERVER_KEY = C.CONFIG_SERVER_KEY
CAS_ATTEMPTS = 50


class ConfigStore:
    def __init__(self, kv: KeyValue, config: ServerConfig, revision: int) -> None:
        self.kv = kv
        self.config = config
        self.revision = revision
        # Every key's last value (hooks included), as stored.
        self.entries: dict[str, bytes] = {SERVER_KEY: config.model_dump_json().encode()}
        self.changed = asyncio.Event()
        self._listeners: list[Callable[[ConfigStore], None]] = []
        self._follow: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, settings: Settings) -> ConfigStore:
        """The store over the bucket pkbs.jobstore.ensure_layout made, seeded if empty;
        not yet following (`start`)."""
        kv = await js.key_value(C.CONFIG_BUCKET)
        seed = ServerConfig.seeded(settings.queues)
        with contextlib.suppress(jserr.KeyWrongLastSequenceError, jserr.BadRequestError):
            await kv.create(SERVER_KEY, seed.model_dump_json().encode())
        entry = await kv.get(SERVER_KEY)
        assert entry.value is not None
        return cls(kv, ServerConfig.model_validate_json(entry.value), entry.revision or 0)

    def on_change(self, listener: Callable[[ConfigStore], None]) -> None:
        """Call `listener` after every change that follows (in the event loop)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Follow the bucket from its current values on; returns once those (every
        hook's too) are in `entries`."""
        watcher = await self.kv.watchall()
        loaded = asyncio.Event()
        self._follow = asyncio.create_task(self._follow_changes(watcher, loaded))
        waiting = asyncio.ensure_future(loaded.wait())
        try:
            await asyncio.wait({self._follow, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow

    async def _follow_changes(
        self, watcher: KeyValue.KeyWatcher, loaded: asyncio.Event
    ) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # the values stored before the watch are in
                    loaded.set()
                    continue
                self._apply(entry)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
            self.entries.pop(entry.key, None)
        else:
            if entry.key == SERVER_KEY:
                if (entry.revision or 0) < self.revision:
                    return
                try:
                    self.config = ServerConfig.model_validate_json(entry.value)
                except ValueError:
                    log.exception("ignoring a server configuration that does not parse")
                    return
                self.revision = entry.revision or 0
            self.entries[entry.key] = entry.value
        self.changed.set()
        self.changed = asyncio.Event()
        for listener in self._listeners:
            try:
                listener(self)
            except Exception:
                log.exception("configuration listener failed")

    async def change(self, edit: Callable[[ServerConfig], ServerConfig]) -> ServerConfig:
        """Store `edit(config)` with a compare-and-set on the last stored one (read
        again and edited again when someone else stored one meanwhile); the stored one.
        `edit` raises to refuse the change."""
        for _ in range(CAS_ATTEMPTS):
            entry = await self.kv.get(SERVER_KEY)
            assert entry.value is not None
            current = ServerConfig.model_validate_json(entry.value)
            edited = edit(current.model_copy(deep=True))
            try:
                revision = await self.kv.update(
                    SERVER_KEY, edited.model_dump_json().encode(), last=entry.revision
                )
            except jserr.KeyWrongLastSequenceError:
                continue
            if revision >= self.revision:
                self.config, self.revision = edited, revision
                self.entries[SERVER_KEY] = edited.model_dump_json().encode()
            return edited
        raise Conflict("server configuration: concurrent changes, retry")
