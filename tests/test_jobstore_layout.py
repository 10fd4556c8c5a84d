"""The streams and buckets pkbs makes (pkbs/jobstore.py ensure_layout), on a
nats-server of this module's own: the KV buckets answer reads directly, including a
bucket an earlier version made without that."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest

from pkbs import constants as C
from pkbs.jobstore import JobStore, _bucket
from pkbs.settings import Settings
from tests.stackutil import bare_nats


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with bare_nats(tmp_path_factory.mktemp("layout-nats")) as url:
        yield url


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


def test_live_output_stream_is_bounded_per_job(nats_url: str) -> None:
    """PKBS_OUTPUT lives in memory and keeps, per job and stream, only its last chunks,
    for a while, within a size for all jobs together: whatever a job prints."""
    from pkbs.jobstore import OUTPUT_MSGS_PER_SUBJECT, output_subject

    async def scenario() -> None:
        settings = Settings(nats_url=nats_url, output_stream_bytes=2 * 1024 * 1024)
        # arrange: the session's server may have the stream already, made by another test
        store = await JobStore.open(settings, "test-layout", arrange=True)
        try:
            config = (await store.js.stream_info(C.OUTPUT_STREAM)).config
            assert config.storage == "memory" and config.max_bytes == 2 * 1024 * 1024
            assert config.max_msgs_per_subject == OUTPUT_MSGS_PER_SUBJECT
            assert config.max_age and config.max_age <= 3600
            subject = output_subject(5, 2, "stdout")
            assert subject == "pkbs.output.5.2.stdout"
            for i in range(OUTPUT_MSGS_PER_SUBJECT + 50):
                await store.js.publish(subject, b"x" * 100 + str(i).encode())
            info = await store.js.stream_info(C.OUTPUT_STREAM, subjects_filter=subject)
            assert info.state.subjects == {subject: OUTPUT_MSGS_PER_SUBJECT}
            last = await store.js.get_last_msg(C.OUTPUT_STREAM, subject)
            assert last.data.endswith(str(OUTPUT_MSGS_PER_SUBJECT + 49).encode())
            big = output_subject(6, None, "stderr")
            for _ in range(40):  # 40 x 100 KiB: more than the stream may hold
                await store.js.publish(big, b"y" * 100 * 1024)
            info = await store.js.stream_info(C.OUTPUT_STREAM)
            assert info.state.bytes <= 2 * 1024 * 1024
        finally:
            await store.close()

    asyncio.run(scenario())
