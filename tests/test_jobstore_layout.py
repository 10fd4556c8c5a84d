"""The streams and buckets pkbs makes (pkbs/jobstore.py ensure_layout), on a
nats-server of this module's own: the KV buckets answer reads directly, including a
bucket an earlier version made without that."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from pkbs import constants as C
from pkbs import servers
from pkbs.jobstore import JobStore, _bucket
from pkbs.settings import Settings


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("layout-nats")
    port = servers.free_port()
    servers.write_nats_config(
        root / "nats.conf", port=port, store_dir=root / "js", user=None, password=None
    )
    proc = servers.start_nats(root / "nats.conf", root / "nats.log")
    servers.wait_for_port("127.0.0.1", port, 20, proc)
    yield f"nats://127.0.0.1:{port}"
    servers.stop(proc)


def test_buckets_answer_reads_directly(nats_url: str) -> None:
    async def scenario() -> None:
        store = await JobStore.open(Settings(nats_url=nats_url), "test-layout")
        try:
            for bucket in (C.JOBS_BUCKET, C.TOKENS_BUCKET, C.DEFINITIONS_BUCKET):
                info = await store.js.stream_info(f"KV_{bucket}")
                assert info.config.allow_direct, bucket
            await store.jobs.put("j.1", b"{}")
            assert (await store.jobs.get("j.1")).value == b"{}"
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_bucket_made_without_direct_reads_gets_them(nats_url: str) -> None:
    async def scenario() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            old = await js.create_key_value(bucket="LEGACY", history=1, direct=False)
            await old.put("k", b"kept")
            assert not (await js.stream_info("KV_LEGACY")).config.allow_direct
            kv = await _bucket(js, "LEGACY", Settings(nats_url=nats_url), arrange=False)
            assert (await js.stream_info("KV_LEGACY")).config.allow_direct
            assert (await kv.get("k")).value == b"kept"
        finally:
            await nc.close()

    asyncio.run(scenario())
