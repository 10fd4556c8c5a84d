"""qmgr: its language, PBS's output formats (golden text, made from OpenPBS's
qmgr.c display()), and the real command against a real stack: changes take effect
everywhere without a restart."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from pkbs import qmgrattrs, qmgrformat
from pkbs.errors import BadAttributeValue, ReadOnlyAttribute, UnknownAttribute, UnknownResource
from pkbs.qmgrsyntax import AttributeOp, QmgrSyntaxError, parse, requests
from pkbs.queues import QueueConfig, consumer_levels
from pkbs.serverconfig import ServerAttrs, ServerConfig
from tests.stackutil import Stack, cli, submit

# --------------------------------------------------------------------------- language


def _parse(text: str):  # type: ignore[no-untyped-def]
    return parse(text, qmgrattrs.is_attribute)


def test_abbreviations_names_and_attributes() -> None:
    request = _parse("s q workq max_run = \"[u:PBS_GENERIC=2], [u:bob=5]\", Priority=5")
    assert request is not None
    assert (request.operation, request.kind, request.names) == ("set", "queue", ["workq"])
    assert request.attributes == [
        AttributeOp("max_run", None, "=", "[u:PBS_GENERIC=2], [u:bob=5]"),
        AttributeOp("Priority", None, "=", "5"),
    ]
    # The third word is an attribute of the server, not a name.
    server = _parse("set server default_queue=short")
    assert server is not None and server.names == [] and server.attributes[0].value == "short"
    listing = _parse("l q a,b@default")
    assert listing is not None and (listing.operation, listing.names) == ("list", ["a", "b"])
    assert _parse("p s") == _parse("print server")
    added = _parse("s q workq resources_max.ncpus += 2")
    assert added is not None
    assert added.attributes == [AttributeOp("resources_max", "ncpus", "+=", "2")]
    unset = _parse("unset queue workq resources_max.ncpus,max_run")
    assert unset is not None and [(a.name, a.resource) for a in unset.attributes] == [
        ("resources_max", "ncpus"), ("max_run", None)
    ]
    assert _parse("   ") is None
    assert _parse("q") is not None and _parse("q").operation == "quit"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "stderr", "status"),
    [
        ("frob q", "qmgr: Illegal operation: frob\nTry 'help' if you are having trouble.\n", 1),
        ("s", "qmgr: No object type given\n", 2),
        ("s x", "qmgr: Illegal object type: x.\n", 2),
        ("s q 1a enabled=t", "qmgr: Syntax error\ns q 1a enabled=t\n    ^\n", 3),
        ("set queue workq", "qmgr: Syntax error\nset queue workq\n               ^\n", 4),
        ("s q workq enabled=", "qmgr: Syntax error\ns q workq enabled=\n                  ^\n", 4),
        ("s q workq enabled=t started", "qmgr: Syntax error\ns q workq enabled=t started\n"
         "                    ^\n", 4),
    ],
)
def test_syntax_errors(text: str, stderr: str, status: int) -> None:
    with pytest.raises(QmgrSyntaxError) as caught:
        _parse(text)
    assert (caught.value.text, caught.value.status) == (stderr, status)


def test_requests_on_input() -> None:
    lines = iter(["# a comment", "", "p s; l q workq # the rest is a comment",
                  "s q a \\", "  enabled=t", 's q a comment = "x;y"', None])
    prompts: list[str] = []

    def read(prompt: str) -> str | None:
        prompts.append(prompt)
        return next(lines)

    assert list(requests(read)) == [
        "p s", "l q workq ", "s q a    enabled=t", 's q a comment = "x;y"'
    ]
    assert prompts[3:6] == ["Qmgr: ", "Qmgr< ", "Qmgr: "]


# --------------------------------------------------------------------------- values


def test_values_are_checked_and_stored_as_pbs_stores_them() -> None:
    queue = qmgrattrs.new_queue(
        _parse("c q short queue_type=e,Priority=-5,resources_max.walltime=3600,"
               "resources_max.mem=2GB,max_run='[u:PBS_GENERIC=2], [u:bob=5]'").attributes  # type: ignore[union-attr]
    )
    assert queue.queue_type == "Execution" and not queue.enabled and not queue.started
    assert queue.resources_max == {"walltime": "01:00:00", "mem": "2gb"}
    assert queue.max_run == "[u:PBS_GENERIC=2],[u:bob=5]"
    qmgrattrs.set_queue(queue, [AttributeOp("max_run", None, "+=", "[u:eve=1]"),
                                AttributeOp("max_run", None, "-=", "[u:bob=5]"),
                                AttributeOp("Priority", None, "+=", "10")])
    assert queue.max_run == "[u:PBS_GENERIC=2],[u:eve=1]" and queue.priority == 5
    for name, resource, value, error in [
        ("enabled", None, "maybe", BadAttributeValue),
        ("Priority", None, "2000", BadAttributeValue),
        ("queue_type", None, "route", BadAttributeValue),
        ("max_run", None, "[x:bob=1]", BadAttributeValue),
        ("resources_max", "ncpus", "four", BadAttributeValue),
        ("resources_max", "widgets", "1", UnknownResource),
        ("acl_users", None, "bob", UnknownAttribute),
        ("total_jobs", None, "1", ReadOnlyAttribute),
    ]:
        with pytest.raises(error):
            qmgrattrs.set_queue(queue, [AttributeOp(name, resource, "=", value)])
    config = ServerConfig()
    qmgrattrs.set_server(config, [AttributeOp("job_history_duration", None, "=", "1209600")])
    assert config.server.job_history_duration == "336:00:00"
    with pytest.raises(Exception, match="Unknown queue"):
        qmgrattrs.set_server(config, [AttributeOp("default_queue", None, "=", "nosuch")])


def test_a_stopped_queue_has_no_consumer() -> None:
    queues = {"workq": QueueConfig(), "held": QueueConfig(started=False)}
    assert consumer_levels(queues) == [("workers", ["pkbs.work.workq.>"])]
    assert consumer_levels({"held": QueueConfig(started=False)}) == []


# --------------------------------------------------------------------------- golden text

CONFIG = ServerConfig(
    server=ServerAttrs(default_queue="workq", comment="two queues, one fast",
                       max_run="[u:PBS_GENERIC=10]"),
    queues={
        "workq": QueueConfig(),
        "fast": QueueConfig(
            priority=10, resources_max={"walltime": "00:10:00", "ncpus": "4"},
            resources_default={"walltime": "00:05:00"},
            max_run="[u:PBS_GENERIC=2],[u:bob=5]", max_queued="[o:PBS_ALL=100]", started=False,
        ),
    },
)

PRINT_SERVER = """\
#
# Create queues and set their attributes.
#
#
# Create and define queue workq
#
create queue workq
set queue workq queue_type = Execution
set queue workq enabled = True
set queue workq started = True
#
# Create and define queue fast
#
create queue fast
set queue fast queue_type = Execution
set queue fast Priority = 10
set queue fast max_queued = [o:PBS_ALL=100]
set queue fast resources_max.ncpus = 4
set queue fast resources_max.walltime = 00:10:00
set queue fast resources_default.walltime = 00:05:00
set queue fast max_run = [u:PBS_GENERIC=2]
set queue fast max_run += [u:bob=5]
set queue fast enabled = True
set queue fast started = False
#
# Set server attributes.
#
set server scheduling = True
set server max_run = [u:PBS_GENERIC=10]
set server default_queue = workq
set server resources_default.ncpus = 1
set server comment = "two queues, one fast"
set server job_history_enable = True
set server job_history_duration = 336:00:00
"""

LIST_QUEUE = """\
Queue fast
    queue_type = Execution
    Priority = 10
    total_jobs = 3
    state_count = Transit:0 Queued:2 Held:0 Waiting:0 Running:1 Exiting:0 Begun:0 \n\
    max_queued = [o:PBS_ALL=100]
    resources_max.ncpus = 4
    resources_max.walltime = 00:10:00
    resources_default.walltime = 00:05:00
    max_run = [u:PBS_GENERIC=2],[u:bob=5]
    hasnodes = True
    enabled = True
    started = False

"""


def _print_server(config: ServerConfig) -> str:
    queues = "".join(
        qmgrformat.print_queue(name, [
            (k, v) for k, v in qmgrattrs.queue_view(name, queue, {}).items()
            if qmgrattrs.settable("queue", k)
        ], qmgrattrs.STRING_ATTRIBUTES)
        for name, queue in config.queues.items()
    )
    server = [(k, v) for k, v in qmgrattrs.server_view("pkbs", config, {}, "h").items()
              if qmgrattrs.settable("server", k)]
    return qmgrformat.QUEUES_HEADER + queues + qmgrformat.print_server(
        server, qmgrattrs.STRING_ATTRIBUTES
    )


def test_print_server_golden() -> None:
    assert _print_server(CONFIG) == PRINT_SERVER


def test_list_queue_golden_and_long_values_wrapped() -> None:
    view = qmgrattrs.queue_view("fast", CONFIG.queues["fast"], Counter({"Q": 2, "R": 1}))
    assert qmgrformat.list_object("Queue fast", view) == LIST_QUEUE
    images = [f"registry.example.org/team/image{i}:1.0" for i in range(4)]
    listed = qmgrformat.list_object("Queue q", {"images": ",".join(images)})
    # Past 80 characters each further piece starts a line (PBS never resets its count).
    assert listed == (
        "Queue q\n    images = registry.example.org/team/image0:1.0,"
        "\n\tregistry.example.org/team/image1:1.0,\n\tregistry.example.org/team/image2:1.0,"
        "\n\tregistry.example.org/team/image3:1.0\n\n"
    )


# --------------------------------------------------------------------------- the real thing


def qmgr(stack: Stack, command: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return cli(stack, "qmgr", "-c", command, env=env)


def test_queue_round_trip_refusals_and_exit_statuses(stack: Stack) -> None:
    name = f"q{uuid.uuid4().hex[:8]}"
    made = qmgr(stack, f"c q {name} queue_type=e,enabled=t,resources_max.walltime=3600")
    assert (made.returncode, made.stdout, made.stderr) == (0, "", "")
    assert qmgr(stack, f"s q {name} started = true, Priority = 0, max_queued = 50").returncode == 0
    listed = qmgr(stack, f"list queue {name}")
    assert listed.returncode == 0
    assert listed.stdout.startswith(f"Queue {name}\n    queue_type = Execution\n")
    assert "    resources_max.walltime = 01:00:00\n" in listed.stdout
    assert "    max_queued = [o:PBS_ALL=50]\n" in listed.stdout
    printed = qmgr(stack, f"p q {name}")
    assert f"create queue {name}\nset queue {name} queue_type = Execution\n" in printed.stdout
    assert f"set queue {name} started = True\n" in printed.stdout
    # qstat -Q -f shows the same live values.
    qstat = cli(stack, "qstat", "-Qf", name)
    assert "    resources_max.walltime = 01:00:00" in qstat.stdout, qstat.stdout
    # Refusals: PBS's lines and exit(pbs_errno) (list: 1).
    for command, message, status in [
        ("s q nosuch_q enabled=f", "qmgr obj=nosuch_q svr=default: Unknown queue", 15018),
        (f"s q {name} foo=1", f"qmgr obj={name} svr=default: Undefined attribute", 15002),
        (f"s q {name} resources_max.widgets=1", f"qmgr obj={name} svr=default: Unknown resource",
         15035),
        (f"s q {name} enabled=maybe",
         f"qmgr obj={name} svr=default: Illegal attribute or resource value", 15014),
        (f"c q {name}", f"qmgr obj={name} svr=default: Queue already exists", 15025),
        ("l q nosuch_q", "qmgr obj=nosuch_q svr=default: Unknown queue", 1),
    ]:
        result = qmgr(stack, command)
        errno = 15018 if status == 1 else status
        assert result.stderr == f"{message}\nqmgr: Error ({errno}) returned from server\n", command
        assert result.returncode == status & 0xFF, command
    # Not an admin: reading is allowed, changes are not.
    user = stack.as_user("alice")
    assert qmgr(stack, "p s", env=user).returncode == 0
    refused = qmgr(stack, f"s q {name} enabled=f", env=user)
    assert refused.stderr == (
        f"qmgr obj={name} svr=default: Unauthorized Request\n"
        "qmgr: Error (15007) returned from server\n"
    )
    assert refused.returncode == 15007 & 0xFF
    server = qmgr(stack, "s s scheduling=f", env=user)
    assert server.stderr.startswith("qmgr obj= svr=default: Unauthorized Request\n")
    # A queue with an unfinished job cannot be deleted; an empty one can.
    job = submit(stack, "-q", name, "-h", input="true\n")
    busy = qmgr(stack, f"d q {name}")
    assert busy.stderr.startswith(f"qmgr obj={name} svr=default: Cannot delete busy object\n")
    assert busy.returncode == 15027 & 0xFF
    assert cli(stack, "qdel", job).returncode == 0
    stack.wait_state(job, "F")
    assert qmgr(stack, f"delete queue {name}").returncode == 0
    assert qmgr(stack, f"l q {name}").returncode == 1


def test_list_server_shows_the_live_workers_resources_which_are_not_set(stack: Stack) -> None:
    qstat = cli(stack, "qstat", "-Bf").stdout
    capacity = [line for line in qstat.splitlines() if ".ncpus = " in line]
    assert any("resources_available.ncpus" in line for line in capacity), qstat
    listed = qmgr(stack, "list server")
    assert listed.returncode == 0
    for line in capacity:
        if "resources_available" in line:  # (assigned moves with the other tests' jobs)
            assert f"{line.strip()}\n" in listed.stdout.replace("    ", ""), listed.stdout
    assert "    resources_assigned.ncpus = " in listed.stdout
    assert "resources_" not in qmgr(stack, "list server resources_max").stdout
    assert "resources_available" not in qmgr(stack, "print server").stdout
    refused = qmgr(stack, "set server resources_available.ncpus = 64")
    assert refused.stderr.startswith(
        "qmgr obj= svr=default: Cannot set attribute, read only or insufficient permission\n"
    ), refused.stderr
    assert refused.returncode == 15003 & 0xFF


def _order_job(log: Path, label: str) -> str:
    return f"echo {label} >> {log}\n"


def test_live_changes_and_print_server_replayed(
    fresh_stack: Stack, tmp_path: Path
) -> None:
    stack = fresh_stack
    stack.up(workers=1, slots=1)
    assert qmgr(stack, "c q urgent queue_type=e,enabled=t,started=t").returncode == 0
    # default_queue: qsub without -q goes where the server says.
    assert qmgr(stack, "set server default_queue = urgent").returncode == 0
    job = submit(stack, input="true\n")
    assert stack.wait_state(job, "F")["queue"] == "urgent"
    assert "    default_queue = urgent" in cli(stack, "qstat", "-Bf").stdout
    assert qmgr(stack, "set server default_queue = workq").returncode == 0

    # A stopped queue takes jobs and starts none; started again, they run.
    assert qmgr(stack, "create queue parked queue_type=e, enabled=t").returncode == 0
    parked = submit(stack, "-q", "parked", input="true\n")
    passing = submit(stack, input="true\n")
    stack.wait_state(passing, "F")
    assert stack.job(parked)["job_state"] == "Q"
    assert qmgr(stack, "s q parked started = True").returncode == 0
    stack.wait_state(parked, "F")

    # A priority raised while jobs wait: the raised queue's job starts first, and the
    # running job is not disturbed by the consumers being arranged again.
    log = tmp_path / "order.log"
    blocker = submit(stack, input=f"sleep 3\n{_order_job(log, 'blocker')}")
    stack.wait_state(blocker, "R")
    first = submit(stack, input=_order_job(log, "workq"))
    second = submit(stack, "-q", "urgent", input=_order_job(log, "urgent"))
    assert qmgr(stack, "s q urgent Priority = 10").returncode == 0
    for each in (blocker, first, second):
        stack.wait_state(each, "F")
    assert log.read_text().split() == ["blocker", "urgent", "workq"]
    done = stack.job(blocker)
    assert (done["run_count"], done["Exit_status"]) == (1, 0)

    # print server, replayed on a fresh stack, makes the same configuration.
    before = qmgr(stack, "print server").stdout
    (tmp_path / "config.qmgr").write_text(before)
    other = Stack(tmp_path / "other")
    other.up(workers=0)
    try:
        replayed = cli(other, "qmgr", input=before)
        assert replayed.stdout == "Max open servers: 49\n"
        # workq exists on every new server, as on PBS's: that one line is refused.
        assert replayed.stderr == (
            "qmgr obj=workq svr=default: Queue already exists\n"
            "qmgr: Error (15025) returned from server\n"
        )
        assert replayed.returncode == 0  # the last request succeeded
        assert qmgr(other, "print server").stdout == before
    finally:
        other.down()


def test_stdin_requests_prompts_and_errors(stack: Stack) -> None:
    name = f"q{uuid.uuid4().hex[:8]}"
    script = f"# make a queue\nc q {name}\ns q {name} enabled = t ; s q {name} Priority=3\n" \
             f"s q {name} nosuch = 1\n"
    result = cli(stack, "qmgr", input=script)
    assert result.stdout == "Max open servers: 49\n"
    assert result.stderr.startswith(f"qmgr obj={name} svr=default: Undefined attribute\n")
    assert result.returncode == 15002 & 0xFF  # the last request's status
    assert "    Priority = 3\n" in qmgr(stack, f"l q {name}").stdout
    aborted = cli(stack, "qmgr", "-a", input=f"s q {name} nosuch = 1\nd q {name}\n")
    assert aborted.returncode == 2
    assert qmgr(stack, f"l q {name}").returncode == 0  # not reached
    assert cli(stack, "qmgr", input=f"d q {name}\nquit\nfrob\n").returncode == 0
    assert qmgr(stack, f"l q {name}").returncode == 1
