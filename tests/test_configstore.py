"""The server configuration store: seeded once from the settings, changed by
compare-and-set, followed live by every holder; PBS's limit syntax."""

from __future__ import annotations

import asyncio

import pytest

from pkbs.configstore import ConfigStore
from pkbs.errors import BadAttributeValue, UnknownQueue
from pkbs.jobstore import connect_nats, ensure_layout
from pkbs.limits import overall_limit, parse_limits, user_limit
from pkbs.queues import QueueConfig
from pkbs.settings import Settings


def test_limits_syntax() -> None:
    limits = parse_limits("[u:PBS_GENERIC=2], [u:bob=5]")
    assert user_limit(limits, "bob") == 5
    assert user_limit(limits, "alice") == 2
    assert overall_limit(limits) is None
    assert overall_limit(parse_limits("10")) == 10
    assert overall_limit(parse_limits('"[o:PBS_ALL=3]"')) == 3
    for bad in ("", "[u:bob]", "[x:bob=1]", "[o:bob=1]", "[u:bob=1] junk"):
        with pytest.raises(BadAttributeValue):
            parse_limits(bad)


def test_older_queue_names_read_as_pbs_attributes() -> None:
    queue = QueueConfig.model_validate({"max_walltime": "00:10:00", "max_ncpus": 4,
                                        "default_walltime": "00:01:00"})
    assert queue.resources_max == {"walltime": "00:10:00", "ncpus": "4"}
    assert queue.resources_default == {"walltime": "00:01:00"}


def test_seeded_once_changed_and_followed(nats_url: str) -> None:
    asyncio.run(_seeded_once_changed_and_followed(nats_url))


async def _seeded_once_changed_and_followed(nats_url: str) -> None:
    settings = Settings(nats_url=nats_url, queues={"workq": QueueConfig(), "short": QueueConfig()})
    nc = await connect_nats(settings, "config-test")
    try:
        js = nc.jetstream()
        await ensure_layout(js, settings)
        first = await ConfigStore.open(js, settings)
        other_seed = Settings(nats_url=nats_url, queues=["elsewhere"])
        second = await ConfigStore.open(js, other_seed)  # the store is not seeded twice
        assert set(second.config.queues) == set(first.config.queues) >= {"workq", "short"}
        await second.start()
        changed = second.changed

        def add_queue(config):  # type: ignore[no-untyped-def]
            config.queues["long"] = QueueConfig(priority=5)
            return config

        await first.change(add_queue)
        await asyncio.wait_for(changed.wait(), 10)
        assert second.config.queues["long"].priority == 5
        with pytest.raises(UnknownQueue):
            second.config.queue("nonesuch")
        await second.stop()
    finally:
        await nc.close()
