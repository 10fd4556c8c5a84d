"""Large arrays are queued a chunk at a time: the first `array_chunk` subjobs get a
work message each, the rest wait in a span message a worker expands when it gets
there. Every subjob still runs exactly once, and a lost span is repaired."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pkbs import constants as C
from pkbs.jobstore import JobStore, spans
from tests.stackutil import Stack, poll, store_settings


def test_spans_group_consecutive_indices() -> None:
    assert spans(range(1, 11), 1) == [(1, 10)]
    assert spans(range(0, 21, 4), 4) == [(0, 20)]
    assert spans([1, 2, 3, 7, 8, 10], 1) == [(1, 3), (7, 8), (10, 10)]
    assert spans([0, 3, 9, 12], 3) == [(0, 3), (9, 12)]
    assert spans([], 1) == []


def _ran(log: Path) -> list[int]:
    return sorted(int(i) for i in log.read_text().split()) if log.exists() else []


def test_chunked_array_runs_every_subjob_exactly_once(stack: Stack, tmp_path: Path) -> None:
    # The session stack queues 3 subjobs at a time: 17 subjobs make 5 expansions.
    log = tmp_path / "ran"
    array = stack.qsub("-J", "1-33:2", input=f'echo "$PBS_ARRAY_INDEX" >> "{log}"\n')
    job = stack.wait_state(array, "F", timeout=60)
    assert job["Exit_status"] == 0
    assert _ran(log) == list(range(1, 34, 2))


def _work_keys(stack: Stack) -> set[str]:
    async def read() -> set[str]:
        store = await JobStore.open(store_settings(stack), "test")
        try:
            return await store.queued_work()
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_lost_span_is_queued_again_by_the_reconciler(fresh_stack: Stack, tmp_path: Path) -> None:
    fresh_stack.extra_env.update({"PKBS_ARRAY_CHUNK": "2", "PKBS_RECONCILE_SECONDS": "1"})
    fresh_stack.up(workers=1, slots=1)
    go, log = tmp_path / "go", tmp_path / "ran"
    # Occupies the only slot, so nothing takes the array's messages yet.
    blocker = fresh_stack.qsub(input=f'until [ -e "{go}" ]; do sleep 0.05; done\n')
    fresh_stack.wait_state(blocker, "R")
    array = fresh_stack.qsub("-J", "1-6", input=f'echo "$PBS_ARRAY_INDEX" >> "{log}"\n')
    number = int(array.split("[")[0])
    assert {f"{number}.1", f"{number}.2", f"{number}.3-6"} <= _work_keys(fresh_stack)

    async def lose_span() -> None:
        store = await JobStore.open(store_settings(fresh_stack), "test")
        try:
            await store.js.purge_stream(
                C.WORK_STREAM, subject=f"{C.WORK_SUBJECT_PREFIX}.workq.{number}.3-6"
            )
        finally:
            await store.close()

    asyncio.run(lose_span())
    poll(
        lambda: f"{number}.3" in _work_keys(fresh_stack),
        30,
        0.2,
        "the reconciler to queue the lost subjobs again",
    )
    go.touch()
    assert fresh_stack.wait_state(array, "F", timeout=60)["Exit_status"] == 0
    assert _ran(log) == [1, 2, 3, 4, 5, 6]
