"""Every command's error messages as a PBS user reads them: each bad input run through
the real CLI against a stack, its exact stderr and exit status (docs/pbs-compat.md,
"Messages"). `{R}` is a running job, `{N}` a running job that is not rerunnable, `{H}`
a held one, `{F}` a finished one; `{port}` a port nothing listens on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pkbs import servers
from tests.stackutil import Stack, api_endpoint, cli, submit

# PBS's usage texts (src/cmds/q*.c), as each command prints them after a usage error.
USAGE = {
    "qdel": "usage:\n\tqdel [-W force|suppress_email=X] [-x] job_identifier...\n"
    "\tqdel --version\n",
    "qhold": "usage: qhold [-h hold_list] job_identifier...\n       qhold --version\n",
    "qrls": "usage: qrls [-h hold_list] job_identifier...\n       qrls --version\n",
    "qsig": "usage: qsig [-s signal] job_identifier...\n       qsig --version\n",
    "qrerun": "usage: qrerun [-W force] job_identifier...\n       qrerun --version\n",
    "qalter": "usage: qalter [-a date_time] [-A account_string] [-c interval] [-e path]\n"
    "\t[-h hold_list] [-j y|n] [-k keep] [-l resource_list]\n"
    "\t[-m mail_options] [-M user_list] [-N jobname] [-o path] [-p priority]\n"
    "\t[-R o|e|oe] [-r y|n] [-S path] [-u user_list] [-W dependency_list]\n"
    "\t[-P project_name] job_identifier...\n"
    "       qalter --version\n",
    "qsub": "usage: qsub [-a date_time] [-A account_string] [-c interval]\n"
    "\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]\n"
    "\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]\n"
    "\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]\n"
    "\t[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]\n"
    "\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]\n"
    "       qsub --version\n",
    "qstat": "usage:\n"
    "qstat [-f] [-F json|dsv] [-D delim] [-J] [-p] [-t] [-x] [-w]\n"
    "\t[ job_identifier... | destination... ]\n"
    "qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w]\n"
    "\t[ job_identifier... | destination... ]\n"
    "qstat -Q [-f] [-F json|dsv] [-D delim] [-w] [ destination... ]\n"
    "qstat -q [-G|-M] [ destination... ]\n"
    "qstat -B [-f] [-F json|dsv] [-D delim] [-w] [ server_name... ]\n"
    "qstat --version\n",
    "pbsnodes": "usage:\tpbsnodes -a[S[j][L]]\n\tpbsnodes -[S[j][L]] host host ...\n"
    "\tpbsnodes --version\n",
    "qmgr": "Usage: qmgr [-a] [-c command] [-e] [-n] [-z] [server...]\n"
    "       qmgr --version\n",
}
FINISHED = "Job has finished"
NO_TOKEN = "Invalid credential: the token is unknown or expired"
NO_SERVER = "cannot connect to server http://127.0.0.1:{port} (errno=111, Connection refused)"


@dataclass(frozen=True)
class Row:
    """`argv` run as the stack's admin (or as `caller`: bob, a bad token, no server);
    what it must print on stderr and exit with."""

    argv: tuple[str, ...]
    stderr: str
    status: int
    caller: str = "admin"


def usage(command: str, message: str = "") -> str:
    return (f"{command}: {message}\n" if message else "") + USAGE[command]


def click_usage(command: str, message: str) -> str:
    """What `pkbs` and its subcommands print after a usage error: the command's usage."""
    usage = {"pkbs": "[OPTIONS] COMMAND [ARGS]...", "pkbs logs": "[OPTIONS] JOB_ID"}[command]
    return f"{command}: {message}\nUsage: {command} {usage}\nTry '{command} -h' for help.\n"


ROWS = {
    # qdel
    "qdel-no-operand": Row(("qdel",), usage("qdel"), 2),
    "qdel-bad-option": Row(("qdel", "-z", "1"), usage("qdel", "invalid option -- 'z'"), 2),
    "qdel-W-no-value": Row(
        ("qdel", "-W"), usage("qdel", "option requires an argument -- 'W'"), 2
    ),
    "qdel-W-bad-value": Row(("qdel", "-W", "bogus", "{R}"), usage("qdel", "illegal -W value"), 2),
    "qdel-not-a-job-id": Row(
        ("qdel", "foo"), "qdel: illegally formed job identifier: foo\n", 1
    ),
    "qdel-unknown": Row(("qdel", "999999.pkbs"), "qdel: Unknown Job Id 999999.pkbs\n", 153),
    "qdel-finished": Row(("qdel", "{F}"), f"qdel: {FINISHED} {{F}}\n", 35),
    "qdel-not-owner": Row(("qdel", "{R}"), "qdel: Unauthorized Request {R}\n", 159, "bob"),
    "qdel-bad-token": Row(("qdel", "{R}", "{H}"), f"qdel: {NO_TOKEN}\n", 171, "bad-token"),
    "qdel-no-server": Row(("qdel", "{R}", "{H}"), f"qdel: {NO_SERVER}\n", 162, "no-server"),
    # qhold
    "qhold-no-operand": Row(("qhold",), usage("qhold"), 2),
    "qhold-h-bad-value": Row(("qhold", "-h", "z", "{R}"), usage("qhold", "illegal -h value"), 2),
    "qhold-unknown": Row(("qhold", "999999.pkbs"), "qhold: Unknown Job Id 999999.pkbs\n", 153),
    "qhold-finished": Row(("qhold", "{F}"), f"qhold: {FINISHED} {{F}}\n", 35),
    # qrls
    "qrls-bad-option": Row(("qrls", "-Z", "1"), usage("qrls", "invalid option -- 'Z'"), 2),
    "qrls-finished": Row(("qrls", "{F}"), f"qrls: {FINISHED} {{F}}\n", 35),
    # qsig
    "qsig-s-no-value": Row(("qsig", "-s"), usage("qsig", "option requires an argument -- 's'"), 2),
    "qsig-unknown-signal": Row(
        ("qsig", "-s", "FOO", "{R}"), "qsig: Unknown/illegal signal name {R}\n", 165
    ),
    "qsig-bad-state": Row(("qsig", "{H}"), "qsig: Request invalid for state of job {H}\n", 168),
    "qsig-finished": Row(("qsig", "{F}"), f"qsig: {FINISHED} {{F}}\n", 35),
    # qrerun
    "qrerun-no-operand": Row(("qrerun",), usage("qrerun"), 2),
    "qrerun-W-bad-value": Row(("qrerun", "-W", "bogus", "{R}"), usage("qrerun"), 2),
    "qrerun-not-rerunnable": Row(("qrerun", "{N}"), "qrerun: Job is not rerunnable {N}\n", 190),
    "qrerun-finished": Row(("qrerun", "{F}"), f"qrerun: {FINISHED} {{F}}\n", 35),
    # qalter
    "qalter-bad-option": Row(("qalter", "-Z", "1"), usage("qalter", "invalid option -- 'Z'"), 2),
    "qalter-unknown-resource": Row(
        ("qalter", "-l", "foo=1", "{H}"), "qalter: Unknown resource Resource_List.foo {H}\n", 187
    ),
    "qalter-running": Row(
        ("qalter", "-N", "x", "{R}"), "qalter: Cannot modify attribute while job running {R}\n",
        167,
    ),
    "qalter-finished": Row(("qalter", "-N", "x", "{F}"), f"qalter: {FINISHED} {{F}}\n", 35),
    # qstat
    "qstat-bad-long-option": Row(
        ("qstat", "--foo"), usage("qstat", "unrecognized option '--foo'"), 2
    ),
    "qstat-u-no-value": Row(
        ("qstat", "-u"), usage("qstat", "option requires an argument -- 'u'"), 2
    ),
    "qstat-F-bad-value": Row(("qstat", "-F", "xml"), usage("qstat", "invalid -F value"), 2),
    "qstat-conflict": Row(("qstat", "-f", "-1"), usage("qstat", "conflicting options."), 2),
    "qstat-unknown": Row(("qstat", "999999.pkbs"), "qstat: Unknown Job Id 999999.pkbs\n", 153),
    "qstat-finished": Row(
        ("qstat", "{F}"),
        f"qstat: {{F}} {FINISHED}, use -x or -H to obtain historical job information\n",
        35,
    ),
    "qstat-unknown-queue": Row(("qstat", "nosuch"), "qstat: Unknown queue nosuch\n", 170),
    "qstat-Q-unknown-queue": Row(("qstat", "-Q", "nosuch"), "qstat: Unknown queue nosuch\n", 170),
    "qstat-bad-token": Row(("qstat",), f"qstat: {NO_TOKEN}\n", 171, "bad-token"),
    "qstat-no-server": Row(("qstat", "{R}", "{H}"), f"qstat: {NO_SERVER}\n", 162, "no-server"),
    # pbsnodes (PBS's exits 1 after its usage and after an unknown node)
    "pbsnodes-no-operand": Row(("pbsnodes",), usage("pbsnodes"), 1),
    "pbsnodes-bad-option": Row(
        ("pbsnodes", "-Z"), usage("pbsnodes", "invalid option -- 'Z'"), 1
    ),
    "pbsnodes-unknown-node": Row(
        ("pbsnodes", "nosuch"), "Node: nosuch,  Error: Unknown node\n", 1
    ),
    # qmgr (PBS's exits 1 after its usage)
    "qmgr-bad-option": Row(("qmgr", "-Z"), usage("qmgr", "invalid option -- 'Z'"), 1),
    "qmgr-unknown-queue": Row(
        ("qmgr", "-c", "set queue nosuch enabled=true"),
        "qmgr obj=nosuch svr=default: Unknown queue\nqmgr: Error (15018) returned from server\n",
        170,
    ),
    "qmgr-not-operator": Row(
        ("qmgr", "-c", "set server scheduling=false"),
        "qmgr obj= svr=default: Unauthorized Request\nqmgr: Error (15007) returned from server\n",
        159,
        "bob",
    ),
    # qsub
    "qsub-bad-option": Row(("qsub", "-Z"), usage("qsub", "invalid option -- 'Z'"), 2),
    "qsub-unknown-queue": Row(
        ("qsub", "-q", "nosuch", "--", "/bin/true"), "qsub: Unknown queue\n", 170
    ),
    "qsub-unknown-resource": Row(
        ("qsub", "-l", "foo=1", "--", "/bin/true"),
        "qsub: Unknown resource Resource_List.foo\n",
        187,
    ),
    "qsub-illegal-value": Row(
        ("qsub", "-l", "walltime=abc", "--", "/bin/true"),
        "qsub: Illegal attribute or resource value Resource_List.walltime: "
        "'abc' is not a duration [[hh:]mm:]ss[.ms]\n",
        166,
    ),
    "qsub-no-script": Row(
        ("qsub", "/nonexistent"),
        "qsub: could not open script file /nonexistent: No such file or directory\n",
        8,
    ),
    "qsub-bad-token": Row(("qsub", "--", "/bin/true"), f"qsub: {NO_TOKEN}\n", 171, "bad-token"),
    "qsub-no-server": Row(("qsub", "--", "/bin/true"), f"qsub: {NO_SERVER}\n", 162, "no-server"),
    # pkbs: click's usage errors and the server's refusals, named by the command called
    "pkbs-no-such-command": Row(
        ("pkbs", "nosuch"), click_usage("pkbs", "No such command 'nosuch'."), 2
    ),
    "pkbs-logs-no-operand": Row(
        ("pkbs", "logs"), click_usage("pkbs logs", "Missing argument 'JOB_ID'."), 2
    ),
    "pkbs-logs-bad-option": Row(
        ("pkbs", "logs", "--bad", "{R}"), click_usage("pkbs logs", "No such option '--bad'."), 2
    ),
    "pkbs-logs-unknown": Row(
        ("pkbs", "logs", "999999.pkbs"), "pkbs logs: Unknown Job Id 999999.pkbs\n", 153
    ),
    "pkbs-logs-no-server": Row(
        ("pkbs", "logs", "{R}"), f"pkbs logs: {NO_SERVER}\n", 162, "no-server"
    ),
    "pkbs-fetch-unfinished": Row(
        ("pkbs", "fetch", "{H}", "/nonexistent/dest"),
        "pkbs fetch: Request invalid for state of job {H}: it is held (H); "
        "its results are stored when it ends\n",
        168,
    ),
    "pkbs-token-not-operator": Row(
        ("pkbs", "token", "create", "eve"), "pkbs token create: Only operators create tokens\n",
        159, "bob",
    ),
}


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> Iterator[dict[str, str]]:
    """The jobs the rows name: running, running and not rerunnable, held, finished."""
    made = {
        "R": submit(stack, input="sleep 300\n"),
        "N": submit(stack, "-r", "n", input="sleep 300\n"),
        "H": submit(stack, "-h", input="sleep 300\n"),
        "F": submit(stack, input="true\n"),
    }
    stack.wait_state(made["R"], "R")
    stack.wait_state(made["N"], "R")
    stack.wait_state(made["F"], "F")
    yield made
    cli(stack, "qdel", made["R"], made["N"], made["H"])


@pytest.fixture(scope="module")
def callers(stack: Stack) -> dict[str, dict[str, str]]:
    endpoint, _ = api_endpoint(stack)
    return {
        "admin": {},
        "bob": stack.as_user("bob"),
        "bad-token": {"PKBS_ENDPOINT": endpoint, "PKBS_TOKEN": "bogus"},
        "no-server": {
            "PKBS_ENDPOINT": f"http://127.0.0.1:{servers.free_port()}",
            "PKBS_TOKEN": "bogus",
        },
    }


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_message(
    stack: Stack, jobs: dict[str, str], callers: dict[str, dict[str, str]], row: Row
) -> None:
    env = callers[row.caller]
    port = env.get("PKBS_ENDPOINT", "").rpartition(":")[2]
    fill = {**jobs, "port": port}
    argv = [arg.format(**fill) for arg in row.argv]
    result = cli(stack, *argv, env=env, input="")
    assert (result.stderr, result.returncode) == (row.stderr.format(**fill), row.status)
