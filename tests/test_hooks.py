"""Hooks as PBS runs them: the hook store, the runner (a process per hook, its alarm,
its order), and real hooks on a stack of their own (hooks are server-wide): queuejob at
qsub, modifyjob at qalter, execjob_begin and execjob_end on the worker."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nats.js.kv import KeyValue
from pkbs.cli.client import Client

from pkbs import constants as C
from pkbs.clientconfig import ClientConfig
from pkbs.configstore import ConfigStore
from pkbs.errors import HookError, HookRejected, UnknownHook, UsageError, exit_code
from pkbs.hookcommands import (
    HookCommand,
    apply_hook_command,
    parse_hook_command,
    with_import_file,
)
from pkbs.hookrun import run_hooks
from pkbs.hookstore import (
    EXECJOB_BEGIN,
    QUEUEJOB,
    Hook,
    HookTable,
    change_hook,
    create_hook,
    delete_hook,
    list_hooks,
    read_hook,
)
from pkbs.jobstore import connect_nats, ensure_layout
from pkbs.settings import Settings
from tests.apiutil import submit_body
from tests.stackutil import BIN, Stack, api_endpoint, poll, store_settings

T = TypeVar("T")
HOOK_ERROR_EXIT = exit_code(15136)  # PBSE_HOOKERROR


def hook(name: str, event: str, body: str, **attrs: Any) -> Hook:
    return Hook(name=name, event=[event], script=f"import pbs\ne = pbs.event()\n{body}", **attrs)


async def _with_kv(settings: Settings, use: Callable[[KeyValue], Awaitable[T]]) -> T:
    nc = await connect_nats(settings, "hooks-test")
    try:
        js = nc.jetstream()
        await ensure_layout(js, settings)
        return await use(await js.key_value(C.CONFIG_BUCKET))
    finally:
        await nc.close()


# -- the runner ------------------------------------------------------------------------


def test_a_hook_sees_the_job_in_pbs_types_and_its_changes_go_to_the_next() -> None:
    first = hook(
        "first",
        QUEUEJOB,
        "r = e.job.Resource_List\n"
        "assert e.type == pbs.QUEUEJOB and e.requestor == 'alice' and e.job.id is None\n"
        "assert r['ncpus'] == 2 and r['walltime'] is None and r['mem'] == pbs.size('1gb')\n"
        "r['walltime'] = pbs.duration('1:30:00')\n"
        "e.job.Job_Name = e.job.Job_Name + '-1'\n"
        "print('to stderr, not the outcome')\n",
    )
    second = hook(
        "second",
        QUEUEJOB,
        "assert str(e.job.Resource_List['walltime']) == '01:30:00'\n"
        "e.job.Job_Name = e.job.Job_Name + '-2'\n"
        "e.accept()\n"
        "e.job.Job_Name = 'never'\n",
    )
    job = {"Job_Name": "x", "Resource_List": {"ncpus": "2", "mem": "1GB"}}
    outcome = asyncio.run(run_hooks([first, second], QUEUEJOB, job, requestor="alice"))
    assert outcome.accepted, outcome
    assert outcome.changes == {"Resource_List": {"walltime": "01:30:00"}, "Job_Name": "x-1-2"}


def test_a_reject_ends_the_event_with_its_message_or_pbs_wording() -> None:
    said = hook("said", QUEUEJOB, "e.reject('no thanks')")
    silent = hook("silent", QUEUEJOB, "e.reject()")
    never = hook("never", QUEUEJOB, "raise SystemExit")
    outcome = asyncio.run(run_hooks([said, never], QUEUEJOB, {}))
    assert (outcome.accepted, outcome.message, outcome.rejected_by) == (False, "no thanks", "said")
    outcome = asyncio.run(run_hooks([silent], QUEUEJOB, {}))
    assert outcome.message == "queuejob request rejected by 'silent'"


def test_a_hook_that_raises_or_sets_what_its_event_forbids_rejects() -> None:
    bodies = ("raise ValueError('oops')", "e.job.id = '7'", "e.job.Resource_List['ncpus'] = 'x'")
    for body in bodies:
        outcome = asyncio.run(run_hooks([hook("bad", QUEUEJOB, body)], QUEUEJOB, {}))
        assert outcome.message == (
            "request rejected as filter hook 'bad' encountered an exception. Please inform Admin"
        ), body
    outcome = asyncio.run(run_hooks([hook("end", EXECJOB_BEGIN, "e.job.Job_Name = 'x'")],
                                    EXECJOB_BEGIN, {"id": "1.pkbs"}))
    assert not outcome.accepted


def test_a_hook_past_its_alarm_is_killed_and_rejects(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    sleeper = hook(
        "sleeper",
        QUEUEJOB,
        f"import subprocess, time\n"
        f"p = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(child)!r}, 'w').write(str(p.pid))\n"
        f"time.sleep(60)\n",
        alarm=1,
    )
    started = time.monotonic()
    outcome = asyncio.run(run_hooks([sleeper], QUEUEJOB, {}))
    assert time.monotonic() - started < 10
    assert outcome.message == (
        "request rejected as filter hook 'sleeper' got an alarm call. Please inform Admin"
    )
    pid = int(child.read_text())
    poll(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, what="hook child gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- the store -------------------------------------------------------------------------


def test_hooks_are_stored_changed_deleted_and_followed_live(nats_url: str) -> None:
    asyncio.run(_stored_changed_deleted_followed(Settings(nats_url=nats_url)))


async def _stored_changed_deleted_followed(settings: Settings) -> None:
    nc = await connect_nats(settings, "hooks-store-test")
    try:
        js = nc.jetstream()
        await ensure_layout(js, settings)
        config = await ConfigStore.open(js, settings)
        kv = config.kv
        await create_hook(kv, hook("later", QUEUEJOB, "pass", order=5))
        await config.start()  # the hooks stored before are in once start returns
        table = HookTable(config)
        assert [h.name for h in table.for_event(QUEUEJOB)] == ["later"]
        with pytest.raises(HookError, match="'later' already registered"):
            await create_hook(kv, hook("later", QUEUEJOB, "pass"))
        changed = config.changed
        await create_hook(kv, hook("sooner", QUEUEJOB, "pass", order=2))
        await asyncio.wait_for(changed.wait(), 10)
        assert [h.name for h in table.for_event(QUEUEJOB)] == ["sooner", "later"]
        changed = config.changed
        await change_hook(kv, "sooner", lambda h: h.model_copy(update={"enabled": False}))
        await asyncio.wait_for(changed.wait(), 10)
        assert [h.name for h in table.for_event(QUEUEJOB)] == ["later"]
        assert [h.name for h in await list_hooks(kv)] == ["later", "sooner"]
        changed = config.changed
        await delete_hook(kv, "later")
        await asyncio.wait_for(changed.wait(), 10)
        assert table.for_event(QUEUEJOB) == []
        with pytest.raises(UnknownHook, match="later does not exist!"):
            await delete_hook(kv, "later")
        await delete_hook(kv, "sooner")
        await config.stop()
    finally:
        await nc.close()


# -- real hooks on a stack -------------------------------------------------------------

SITE_HOOKS = [
    hook(
        "ncpus_limit",
        QUEUEJOB,
        "ncpus = e.job.Resource_List['ncpus']\n"
        "if ncpus is not None and ncpus > 4:\n"
        "    e.reject('Too many cpus requested: %d (at most 4)' % ncpus)\n",
    ),
    hook(
        "default_walltime",
        QUEUEJOB,
        "if e.job.Resource_List['walltime'] is None:\n"
        "    e.job.Resource_List['walltime'] = pbs.duration('01:00:00')\n"
        "    e.job.comment = 'walltime set by hook'\n",
    ),
    hook("raiser", QUEUEJOB, "if e.job.Job_Name == 'boom':\n    raise RuntimeError('boom')\n"),
    hook(
        "sleeper",
        QUEUEJOB,
        "import time\nif e.job.Job_Name == 'sleepy':\n    time.sleep(60)\n",
        alarm=2,
    ),
    # Named so that their names sort against their order: order decides.
    hook("zfirst", QUEUEJOB, "if e.job.Job_Name == 'ordered':\n    e.job.Account_Name = 'a'\n",
         order=1),
    hook(
        "asecond",
        QUEUEJOB,
        "if e.job.Job_Name == 'ordered':\n"
        "    e.job.Account_Name = (e.job.Account_Name or '') + 'b'\n",
        order=5,
    ),
    hook("disabled", QUEUEJOB, "e.reject('a disabled hook ran')", enabled=False),
    hook(
        "alter_check",
        "modifyjob",
        "walltime = e.job.Resource_List['walltime']\n"
        "if walltime is not None and walltime > pbs.duration('02:00:00'):\n"
        "    e.reject('walltime over 2 hours is not allowed')\n"
        "e.job.comment = 'altered from %s' % e.job_o.Resource_List['walltime']\n",
    ),
    hook(
        "begin_gate",
        EXECJOB_BEGIN,
        "if e.job.Job_Name == 'nobegin':\n    e.reject('not on this host')\n",
    ),
    hook(
        "end_tag",
        "execjob_end",
        "e.job.comment = 'exit %s tagged' % e.job.Exit_status\n"
        "e.job.resources_used['site_tag'] = 'done'\n",
    ),
]


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own with SITE_HOOKS installed (hooks are server-wide)."""
    stack = Stack(tmp_path_factory.mktemp("hooks-home"))
    stack.up(workers=1, slots=2)

    async def install(kv: KeyValue) -> None:
        for site_hook in SITE_HOOKS:
            await create_hook(kv, site_hook)

    try:
        asyncio.run(_with_kv(store_settings(stack), install))
        yield stack
    finally:
        stack.down()


def _all_jobs(stack: Stack) -> set[str]:
    return set(stack.qstat_json().get("Jobs", {}))


def _rejected(stack: Stack, *args: str) -> tuple[int, str]:
    result = stack.run(str(BIN / "qsub"), *args, input="true\n")
    return result.returncode, result.stderr


def test_queuejob_rejects_by_ncpus_and_nothing_is_queued(hooked: Stack) -> None:
    before = _all_jobs(hooked)
    status, stderr = _rejected(hooked, "-l", "ncpus=8")
    assert (status, stderr) == (HOOK_ERROR_EXIT, "qsub: Too many cpus requested: 8 (at most 4)\n")
    assert _all_jobs(hooked) == before


def test_queuejob_sets_a_default_walltime_and_a_comment(hooked: Stack) -> None:
    held = hooked.qsub("-h", input="true\n")
    job = hooked.job(held)
    assert job["Resource_List"]["walltime"] == "01:00:00"
    assert job["comment"] == "walltime set by hook"
    given = hooked.qsub("-h", "-l", "walltime=00:10:00", input="true\n")
    assert hooked.job(given)["Resource_List"]["walltime"] == "00:10:00"
    assert "comment" not in hooked.job(given)
    assert hooked.run(str(BIN / "qdel"), held, given).returncode == 0


def test_a_hook_that_raises_or_overruns_its_alarm_rejects_the_submission(hooked: Stack) -> None:
    before = _all_jobs(hooked)
    assert _rejected(hooked, "-N", "boom") == (
        HOOK_ERROR_EXIT,
        "qsub: request rejected as filter hook 'raiser' encountered an exception. "
        "Please inform Admin\n",
    )
    started = time.monotonic()
    assert _rejected(hooked, "-N", "sleepy") == (
        HOOK_ERROR_EXIT,
        "qsub: request rejected as filter hook 'sleeper' got an alarm call. Please inform Admin\n",
    )
    assert time.monotonic() - started < 20
    assert _all_jobs(hooked) == before
    logs = (hooked.home / "logs" / "dispatcher.log").read_text()
    assert "queuejob hook 'raiser' encountered an exception, request rejected" in logs
    assert "alarm call while running queuejob hook 'sleeper', request rejected" in logs


def test_queuejob_hooks_check_every_job_of_a_batch(hooked: Stack) -> None:
    before = _all_jobs(hooked)
    bodies = [submit_body(), submit_body(name="boom")]
    refused = "^batch job 1: request rejected as filter hook 'raiser'"
    with pytest.raises(HookRejected, match=refused):
        Client(ClientConfig(*api_endpoint(hooked))).submit_many(bodies)
    assert _all_jobs(hooked) == before
    bodies = [submit_body(), submit_body(name="ordered")]
    job_ids = Client(ClientConfig(*api_endpoint(hooked))).submit_many(bodies)
    assert hooked.job(job_ids[0])["Resource_List"]["walltime"] == "01:00:00"
    assert hooked.job(job_ids[1])["Account_Name"] == "ab"


def test_hooks_run_in_order_and_a_disabled_one_not_at_all(hooked: Stack) -> None:
    job_id = hooked.qsub("-h", "-N", "ordered", input="true\n")  # "disabled" would reject
    assert hooked.job(job_id)["Account_Name"] == "ab"
    hooked.run(str(BIN / "qdel"), job_id)


def test_modifyjob_checks_and_changes_a_qalter(hooked: Stack) -> None:
    job_id = hooked.qsub("-h", input="true\n")
    refused = hooked.run(str(BIN / "qalter"), "-l", "walltime=05:00:00", job_id)
    assert refused.returncode == HOOK_ERROR_EXIT
    assert refused.stderr == f"qalter: walltime over 2 hours is not allowed {job_id}\n"
    assert hooked.job(job_id)["Resource_List"]["walltime"] == "01:00:00"
    done = hooked.run(str(BIN / "qalter"), "-l", "walltime=00:30:00", job_id)
    assert done.returncode == 0, done.stderr
    job = hooked.job(job_id)
    assert job["Resource_List"]["walltime"] == "00:30:00"
    assert job["comment"] == "altered from 01:00:00"
    hooked.run(str(BIN / "qdel"), job_id)


def test_execjob_end_tags_the_finished_job(hooked: Stack) -> None:
    job = hooked.wait_state(hooked.qsub(input="exit 3\n"))
    assert job["Exit_status"] == 3
    assert job["comment"] == "exit 3 tagged"
    assert job["resources_used"]["site_tag"] == "done"


def test_execjob_begin_reject_requeues_the_job_until_the_hook_lets_it(hooked: Stack) -> None:
    job_id = hooked.qsub("-N", "nobegin", input="true\n")

    def refused() -> dict[str, Any] | None:
        job = hooked.job(job_id)
        return job if job["job_state"] == "Q" and job.get("run_count") else None

    job = poll(refused, 30, 0.1, "the job queued again after a refused start")
    assert job["comment"] == "Not Running: PBS Error: Execution server rejected request"
    logs = (hooked.home / "logs").glob("worker*.log")
    assert any("execjob_begin request rejected by 'begin_gate'" in p.read_text() for p in logs)

    async def disable(kv: KeyValue) -> None:
        await change_hook(kv, "begin_gate", lambda h: h.model_copy(update={"enabled": False}))

    asyncio.run(_with_kv(store_settings(hooked), disable))  # live: no restart
    job = hooked.wait_state(job_id, "F", timeout=60)
    assert job["Exit_status"] == 0
    assert job["comment"] == "exit 0 tagged"


def test_hook_logs_name_the_hook(hooked: Stack) -> None:
    assert _rejected(hooked, "-l", "ncpus=6")[0] == HOOK_ERROR_EXIT

    def logged() -> bool:
        lines = (hooked.home / "logs" / "dispatcher.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return any(
            e.get("hook") == "ncpus_limit" and "(at most 4)" in e.get("msg", "") for e in entries
        )

    poll(logged, 10, what="the rejection logged with the hook's name")


# -- qmgr's hook commands --------------------------------------------------------------


def test_qmgr_hook_commands_parse_as_pbs_writes_them() -> None:
    command = parse_hook_command('set hook h1 event = "queuejob,execjob_end", alarm=10')
    assert command.settings == (("event", "=", "queuejob,execjob_end"), ("alarm", "=", "10"))
    assert parse_hook_command("s hook h1 event += modifyjob").settings == (
        ("event", "+=", "modifyjob"),
    )
    assert parse_hook_command("l hook") == HookCommand("list")
    imported = parse_hook_command("import hook h1 application/x-python default h1.py")
    assert (imported.encoding, imported.file) == ("default", "h1.py")
    for bad in ("create hook", "set hook h1", "set hook h1 alarm", "list queue q", "frob hook h"):
        with pytest.raises(UsageError, match="Syntax error"):
            parse_hook_command(bad)
    with pytest.raises(HookError, match="content-type"):
        parse_hook_command("import hook h1 text/plain default h1.py")


def test_qmgr_hook_commands_create_set_import_list_export_delete(
    nats_url: str, tmp_path: Path
) -> None:
    (tmp_path / "cpus.py").write_text("import pbs\npbs.event().accept()\n")
    (tmp_path / "cpus.b64").write_text(base64.encodebytes(b"import pbs\n").decode())
    (tmp_path / "broken.py").write_text("def (:\n")

    async def session(kv: KeyValue) -> list[str]:
        async def qmgr(text: str) -> str:
            command = with_import_file(parse_hook_command(text), tmp_path)
            return await apply_hook_command(kv, command)

        out = [await qmgr("create hook cpus")]
        await qmgr('set hook cpus event = "queuejob,execjob_end"')
        await qmgr("set hook cpus event += modifyjob")
        await qmgr("set hook cpus event -= execjob_end")
        await qmgr("set hook cpus enabled = false, alarm = 10, order = 7")
        await qmgr("import hook cpus application/x-python default cpus.py")
        out.append(await qmgr("list hook cpus"))
        out.append(await qmgr("export hook cpus application/x-python default"))
        out.append(await qmgr("print hook cpus"))
        await qmgr("import hook cpus application/x-python base64 cpus.b64")
        out.append(await qmgr("export hook cpus application/x-python default"))
        await qmgr("unset hook cpus alarm")
        out.append((await read_hook(kv, "cpus"))[0].model_dump_json())
        for bad, message in [
            ("create hook cpus", "hook name 'cpus' already registered, try another name"),
            ("create hook PBS_x", "cannot use PBS as a prefix"),
            ("set hook cpus event = runjobs", r"invalid argument \(runjobs\) to event"),
            ("set hook cpus enabled = maybe", "unexpected value 'maybe'"),
            ("set hook cpus alarm = 0", "alarm value '0' of a hook must be > 0"),
            ("set hook cpus order = 1001", r"order given \(1001\) is outside"),
            ("import hook cpus application/x-python default broken.py", "not a Python script"),
        ]:
            with pytest.raises(HookError, match=message):
                await qmgr(bad)
        with pytest.raises(UnknownHook, match="^nosuch does not exist!$"):
            await qmgr("set hook nosuch enabled = true")
        await qmgr("delete hook cpus")
        out.append(await qmgr("list hook"))
        return out

    created, listed, exported, printed, reimported, stored, empty = asyncio.run(
        _with_kv(Settings(nats_url=nats_url), session)
    )
    assert created == ""
    assert listed == (
        "Hook cpus\n"
        "    type = site\n"
        "    enabled = false\n"
        "    event = queuejob,modifyjob\n"
        "    user = pbsadmin\n"
        "    alarm = 10\n"
        "    order = 7\n"
        "    debug = false\n"
        "    fail_action = none\n"
        "\n"
    )
    assert exported == "import pbs\npbs.event().accept()\n"
    assert printed.startswith(
        "#\n# Create hooks and set their properties.\n#\n"
        "#\n# Create and define hook cpus\n#\n"
        "create hook cpus\n"
        "set hook cpus type = site\n"
        "set hook cpus enabled = false\n"
        "set hook cpus event = queuejob,modifyjob\n"
    )
    assert "import hook cpus application/x-python base64 -\n" in printed
    assert reimported == "import pbs\n"
    assert json.loads(stored)["alarm"] == 30
    assert empty == ""
