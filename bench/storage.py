"""Scenario 8, storage: a steady stream of jobs over three history periods (shortened:
job_history_duration of seconds, a sweep every few seconds), on a stack of its own.
JetStream's bytes (the submit stream, the jobs bucket) and WebDAV's (the served
directory) are sampled every second; with retention they stay flat after the first
period instead of growing. Also the bytes one job costs in each, for capacity planning
(docs/admin.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from pkbs import constants as C
from pkbs.configstore import ConfigStore
from pkbs.jobstore import JobStore
from pkbs.settings import Settings
from pkbs.storage import JOBS_STREAM

from .stack import BenchStack
from .submit import Api, request_body, with_new_id

RESULT_KIB = 64  # what each job writes (uploaded to WebDAV)
SCRIPT = f"#PBS -S /bin/sh\nhead -c {RESULT_KIB * 1024} /dev/urandom > result.bin\n# "


def _du(root: Path) -> tuple[int, int]:
    """(bytes of the files under root, job collections: `<base>/<user>/<jobid>`)."""
    total, jobs = 0, 0
    for path, _dirs, files in os.walk(root):
        total += sum((Path(path) / f).stat().st_size for f in files if (Path(path) / f).exists())
        if Path(path).parent.parent == root / "pkbs":
            jobs += 1
    return total, jobs


def _settings(stack: BenchStack) -> Settings:
    return Settings(
        nats_url=stack.nats_url,
        nats_user=stack.secrets["nats_user"],
        nats_password=stack.secrets["nats_password"],
    )


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _thirds(samples: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    third = len(samples) // 3
    parts = [samples[:third], samples[third : 2 * third], samples[2 * third :]]
    means = [_mean([s[key] for s in part]) for part in parts]
    ratio = round(means[2] / means[1], 3) if means[1] else None
    return {
        "first_third_mean": round(means[0]),
        "second_third_mean": round(means[1]),
        "last_third_mean": round(means[2]),
        "last_to_second_third": ratio,
        "max": max(s[key] for s in samples),
    }


async def _run(
    stack: BenchStack, history: float, seconds: float, rate: float, kib: tuple[int, int]
) -> dict[str, Any]:
    settings = _settings(stack)
    store = await JobStore.open(settings, "bench-storage")
    config = await ConfigStore.open(store.js, settings)
    await config.change(
        lambda c: c.model_copy(
            update={"server": c.server.model_copy(update={"job_history_duration": str(history)})}
        )
    )
    body = request_body(stack.base_env(), SCRIPT.encode())
    api = Api(stack.endpoint, stack.token)
    samples: list[dict[str, Any]] = []
    payload_bytes: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        started = time.monotonic()
        while not stop.is_set():
            submit = await store.js.stream_info(C.SUBMIT_STREAM)
            jobs = await store.js.stream_info(JOBS_STREAM)
            dav, dav_jobs = await asyncio.to_thread(_du, stack.home / "webdav")
            samples.append({
                "t": round(time.monotonic() - started, 2),
                "submit_bytes": int(submit.state.bytes),
                "submit_msgs": int(submit.state.messages),
                "jobs_kv_bytes": int(jobs.state.bytes),
                "jobs_kv_msgs": int(jobs.state.messages),
                "webdav_bytes": dav,
                "webdav_jobs": dav_jobs,
            })
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    submitted = 0
    t0 = time.monotonic()
    rng = os.urandom
    while time.monotonic() - t0 < seconds:
        size = kib[0] * 1024 + int.from_bytes(rng(4)) % ((kib[1] - kib[0]) * 1024 + 1)
        filler = base64.b64encode(rng(size * 3 // 4)).decode()[:size]
        script = SCRIPT.encode() + filler.encode() + b"\n"
        body["payload_b64"] = base64.b64encode(script).decode()
        payload_bytes.append(len(script))
        await asyncio.to_thread(api.submit, with_new_id(body))
        submitted += 1
        await asyncio.sleep(max(0.0, t0 + submitted / rate - time.monotonic()))
    stop.set()
    await sampler
    api.close()
    await config.stop()
    await store.close()
    return {"samples": samples, "submitted": submitted, "payload_bytes": payload_bytes}


def storage(
    history: float = 10.0,
    sweep: float = 2.0,
    periods: int = 3,
    rate: float = 3.0,
    kib: tuple[int, int] = (100, 500),
    log: Any = print,
) -> dict[str, Any]:
    stack = BenchStack(workers=1, slots=2,
                       extra_env={"PKBS_RETENTION_SWEEP_SECONDS": str(sweep)})
    stack.up()
    try:
        seconds = history * periods + sweep * 2
        log(f"  storage: {rate:g} jobs/s of {kib[0]}-{kib[1]} KiB for {seconds:.0f} s, "
            f"history {history:g} s, sweep every {sweep:g} s")
        run = asyncio.run(_run(stack, history, seconds, rate, kib))
    finally:
        stack.down()
    samples = run["samples"]
    last = samples[-1]
    per_payload = _mean([float(n) for n in run["payload_bytes"]])
    out: dict[str, Any] = {
        "history_s": history,
        "sweep_s": sweep,
        "duration_s": round(seconds, 1),
        "jobs_submitted": run["submitted"],
        "payload_bytes_mean": round(per_payload),
        "result_bytes_per_job": RESULT_KIB * 1024,
        "submit_stream": _thirds(samples, "submit_bytes"),
        "jobs_kv": _thirds(samples, "jobs_kv_bytes"),
        "webdav": _thirds(samples, "webdav_bytes"),
        "target": "last third / second third <= 1.2 (flat, not growing)",
    }
    # What one job costs while it is kept, from the steady state (the last third).
    tail = samples[2 * len(samples) // 3 :]
    msgs = _mean([s["submit_msgs"] for s in tail])
    records = _mean([s["jobs_kv_msgs"] for s in tail])
    dav_jobs = _mean([s["webdav_jobs"] for s in tail])
    def per(key: str, count: float) -> int | None:
        return round(_mean([s[key] for s in tail]) / count) if count else None

    out["per_job"] = {
        # A kept job's payload message (its payload plus the message's own bytes).
        "submit_stream_bytes": per("submit_bytes", msgs),
        # A kept job's share of the bucket: its record, and the purge markers of the
        # jobs deleted meanwhile (they expire by themselves).
        "jobs_kv_bytes": per("jobs_kv_bytes", msgs),
        "jobs_kv_bytes_per_message": per("jobs_kv_bytes", records),
        "webdav_bytes": per("webdav_bytes", dav_jobs),
    }
    out["kept_at_end"] = {k: last[k] for k in ("submit_msgs", "jobs_kv_msgs", "webdav_jobs")}
    out["samples"] = samples
    return out


if __name__ == "__main__":  # python -m bench.storage: this scenario alone
    print(json.dumps({k: v for k, v in storage().items() if k != "samples"}, indent=2))
