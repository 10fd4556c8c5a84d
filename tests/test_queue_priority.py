"""Queue priority: when workers are busy, jobs of a higher-priority queue start
before those of a lower one, whatever the submission order (one consumer per
priority level, asked highest first)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pkbs import constants as C
from pkbs.jobstore import JobStore
from pkbs.queues import QueueConfig, consumer_levels
from pkbs.settings import Settings
from tests.stackutil import Stack, bare_nats, cli, store_settings

QUEUES = {"workq": {}, "high": {"priority": 10}, "low": {"priority": -5}}


def test_consumer_levels() -> None:
    assert consumer_levels({"workq": QueueConfig()}) == [("workers", ["pkbs.work.>"])]
    same = {"workq": QueueConfig(priority=3), "other": QueueConfig(priority=3)}
    assert consumer_levels(same) == [("workers", ["pkbs.work.>"])]
    levels = {name: QueueConfig(**conf) for name, conf in QUEUES.items()}
    levels["urgent"] = QueueConfig(priority=10)
    assert consumer_levels(levels) == [
        ("workers-p10", ["pkbs.work.high.>", "pkbs.work.urgent.>"]),
        ("workers", ["pkbs.work.workq.>"]),
        ("workers-n5", ["pkbs.work.low.>"]),
    ]


async def _read_consumers(settings: Settings, arrange: bool = False) -> dict[str, list[str]]:
    store = await JobStore.open(settings, "test", arrange=arrange)
    try:
        infos = await store.js.consumers_info(C.WORK_STREAM)
        return {
            i.name: sorted(i.config.filter_subjects or [i.config.filter_subject or ""])
            for i in infos
        }
    finally:
        await store.close()


def _consumers(stack: Stack) -> dict[str, list[str]]:
    return asyncio.run(_read_consumers(store_settings(stack)))


def test_the_dispatcher_arranges_consumers_when_priorities_change(tmp_path: Path) -> None:
    with bare_nats(tmp_path) as url:
        plain = Settings(nats_url=url)
        levels = Settings(nats_url=url, queues={n: QueueConfig(**c) for n, c in QUEUES.items()})
        one = {"workers": ["pkbs.work.>"]}
        assert asyncio.run(_read_consumers(plain)) == one
        # Workers (and tools) only add what is missing: they never take a consumer away.
        assert asyncio.run(_read_consumers(levels)) == one
        assert asyncio.run(_read_consumers(levels, arrange=True)) == {
            "workers-p10": ["pkbs.work.high.>"],
            "workers": ["pkbs.work.workq.>"],
            "workers-n5": ["pkbs.work.low.>"],
        }
        assert asyncio.run(_read_consumers(plain, arrange=True)) == one


def test_higher_priority_queues_start_first(fresh_stack: Stack, tmp_path: Path) -> None:
    fresh_stack.extra_env["PKBS_QUEUES"] = json.dumps(QUEUES)
    fresh_stack.up(workers=1, slots=1)
    assert _consumers(fresh_stack) == {
        "workers-p10": ["pkbs.work.high.>"],
        "workers": ["pkbs.work.workq.>"],
        "workers-n5": ["pkbs.work.low.>"],
    }
    go, log = tmp_path / "go", tmp_path / "order"
    blocker = fresh_stack.qsub(input=f'until [ -e "{go}" ]; do sleep 0.05; done\n')
    fresh_stack.wait_state(blocker, "R")
    submitted = []
    for queue, name in [("low", "l1"), ("workq", "w1"), ("low", "l2"), ("high", "h1"),
                        ("workq", "w2"), ("high", "h2"), ("low", "l3")]:
        submitted.append(fresh_stack.qsub(
            "-q", queue, "-N", name, input=f'echo "$PBS_JOBNAME $PBS_QUEUE" >> "{log}"\n'))
    queues = cli(fresh_stack, "qstat", "-Q")
    assert queues.returncode == 0 and "high" in queues.stdout and "low" in queues.stdout
    go.touch()
    for job_id in submitted:
        assert fresh_stack.wait_state(job_id, "F")["Exit_status"] == 0
    assert log.read_text().split("\n") == [
        "h1 high", "h2 high", "w1 workq", "w2 workq", "l1 low", "l2 low", "l3 low", ""
    ]
