"""qsub: submit a job. Prints only the job id; errors as `qsub: <message>`.

Standard library only on this path (no pydantic, nats or http libraries): qsub
must start about as fast as Python itself.
"""

from __future__ import annotations

import os
import sys

# _socket is what socket.py wraps (the same gethostname / gethostbyaddr functions); the
# wrapper module itself builds four enums from _socket's constants at import, ~3-5 ms.
from _socket import gethostbyaddr, gethostname
from binascii import b2a_base64

from pkbs.constants import MAX_PAYLOAD_BYTES
from pkbs.errors import (
    EXIT_BLOCK_DELETED,
    EXIT_USAGE,
    ScriptError,
    ScriptUnreadable,
    UsageError,
    exit_code,
)
from pkbs.qsuboptions import (
    QsubOptions,
    choose_directive_prefix,
    merge,
    parse_destination,
    parse_qsub_args,
    parse_script_options,
)

from .client import Client
from .command import run

TYPE_CHECKING = False  # typing is not imported at run time (qsub's start)
if TYPE_CHECKING:
    from collections.abc import Sequence

USAGE = """usage: qsub [-a date_time] [-A account_string] [-c interval]
\t[-C directive_prefix] [-e path] [-f ] [-h ] [-I [-X]] [-j oe|eo] [-J X-Y[:Z]]
\t[-k keep] [-l resource_list] [-m mail_options] [-M user_list]
\t[-N jobname] [-o path] [-p priority] [-P project] [-q queue] [-r y|n]
\t[-R o|e|oe] [-S path] [-u user_list] [-W otherattributes=value...]
\t[-v variable_list] [-V ] [-z] [script | -- command [arg1 ...]]
       qsub --version
"""
STDIN_NAME = "STDIN"
RUN_SH = "run.sh"
# Not carried out by pkbs: refused rather than silently ignored.
UNSUPPORTED_W = {
    "stagein": "-W stagein (no shared file system: put inputs in the job directory)",
    "stageout": "-W stageout (results are stored on WebDAV; use pkbs fetch)",
}


class Source:
    """What is being submitted and the script text its directives come from."""

    def __init__(
        self, kind: str, entrypoint: str, default_name: str, script: str, payload: bytes
    ) -> None:
        self.kind = kind
        self.entrypoint = entrypoint
        self.default_name = default_name
        self.script = script
        self.payload = payload
        # A single script or executable travels as itself; a directory as a zip.
        self.payload_format = "zip" if kind == "dir" else "file"


def _read_source(operands: list[str]) -> Source:
    if operands[:1] == ["--"]:
        import shlex

        script = "exec " + " ".join(shlex.quote(a) for a in operands[1:]) + "\n"
        data = script.encode()
        return Source("stdin", STDIN_NAME, STDIN_NAME, "", data)
    if not operands or operands == ["-"]:
        if sys.stdin.isatty():
            sys.stderr.write("Job script will be read from standard input. Submit with CTRL+D.\n")
        data = sys.stdin.buffer.read()
        if not data.strip():
            raise ScriptError("script file is empty (nothing on standard input)")
        return Source("stdin", STDIN_NAME, STDIN_NAME, _text(data), data)
    path = operands[0]
    base = os.path.basename(path.rstrip("/")) or path
    if os.path.isdir(path):
        run_sh = os.path.join(path, RUN_SH)
        if not os.path.isfile(run_sh):
            raise ScriptError(f"directory {path} has no {RUN_SH} at its top level")
        with open(run_sh, "rb") as fh:
            script = _text(fh.read())
        from pkbs import payload

        return Source("dir", RUN_SH, base, script, payload.build_from_directory(path))
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ScriptUnreadable(f"could not open script file {path}: {exc.strerror}") from None
    if not data.strip():
        raise ScriptError(f"script file {path} is empty")
    if os.access(path, os.X_OK):
        return Source("file", base, base, _text(data), data)
    if b"\0" in data:
        raise ScriptError(
            f"{path} is not executable and not a job script (chmod +x it to run it as the job)"
        )
    # A plain job script, as PBS takes it: run by the job's shell.
    return Source("stdin", base, base, _text(data), data)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def job_variables(options: QsubOptions, workdir: str, host: str) -> dict[str, str]:
    env = os.environ
    variables: dict[str, str] = {}
    if options.export_env:
        # Not pkbs's own settings: PKBS_TOKEN is a credential, not job environment.
        variables.update({k: v for k, v in env.items() if not k.startswith(("PBS_O_", "PKBS_"))})
    for name, value in (options.variables or {}).items():
        if name.startswith("PBS_O_"):
            continue
        variables[name] = env.get(name, "") if value is None else value
    for name in ("HOME", "LANG", "PATH", "MAIL", "SHELL", "TZ"):
        if name in env:
            variables[f"PBS_O_{name}"] = env[name]
    variables["PBS_O_LOGNAME"] = login_name()
    variables["PBS_O_SYSTEM"] = os.uname().sysname
    variables["PBS_O_WORKDIR"] = workdir
    variables["PBS_O_HOST"] = host
    return variables


def submit_host() -> str:
    """This host's name as the job records it, in Submit_Host and PBS_O_HOST alike: its
    fully qualified name (socket.getfqdn()), unless that is only a loopback name
    (`localhost`, as when /etc/hosts lists the host name on 127.0.0.1 after it), then
    its host name.

    An ASCII host name goes to gethostbyaddr as bytes: as str it is encoded with the
    idna codec, whose import (encodings.idna, stringprep, unicodedata and a regex
    compiled at import) costs more than the lookup itself."""
    name = gethostname()
    try:
        hostname, aliases, _ = gethostbyaddr(
            name.encode() if name.isascii() else name  # type: ignore[arg-type]
        )
    except OSError:
        return name
    for alias in (hostname, *aliases):
        if "." in alias and not alias.startswith("localhost"):
            return alias
    return name if hostname.startswith("localhost") else hostname


def login_name() -> str:
    """The submitting account: $LOGNAME, else its name in the password database."""
    name = os.environ.get("LOGNAME")
    if name:
        return name
    import pwd  # built in: no file to load, and only when LOGNAME is unset

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def submit_workdir() -> str:
    pwd = os.environ.get("PWD")
    try:
        if pwd and os.path.samestat(os.stat(pwd), os.stat(".")):
            return pwd
    except OSError:
        pass
    return os.getcwd()


def attributes_of(options: QsubOptions) -> dict[str, str]:
    """PBS attributes that pkbs records as given (Account_Name, project, Mail_*...)."""
    attrs: dict[str, str] = {}
    for key, value in (
        ("Account_Name", options.account),
        ("project", options.project),
        ("Mail_Points", options.mail_points),
        ("Mail_Users", options.mail_users),
        ("Priority", None if options.priority is None else str(options.priority)),
        ("Checkpoint", options.checkpoint),
        ("User_List", options.user_list),
        ("Remove_Files", options.remove_files),
    ):
        if value is not None:
            attrs[key] = value
    for key, value in options.attributes.items():
        if key not in ("depend", "block"):
            attrs[key] = value
    if options.max_run_subjobs is not None:
        attrs["max_run_subjobs"] = str(options.max_run_subjobs)
    return attrs


def build_request(options: QsubOptions, source: Source, argv: list[str]) -> dict[str, object]:
    queue = ""  # the server's default_queue
    if options.destination:
        queue = parse_destination(options.destination)[0] or ""
    host = submit_host()
    spec = {
        "name": options.name or source.default_name,
        "queue": queue,
        "kind": source.kind,
        "entrypoint": source.entrypoint,
        "payload_format": source.payload_format,
        "shell": options.shell,
        "resources": dict(options.resources),
        "variables": job_variables(options, submit_workdir(), host),
        "output_path": options.output_path,
        "error_path": options.error_path,
        "join": options.join or "n",
        "keep": options.keep or "n",
        "hold": options.hold,
        "rerunnable": True if options.rerunnable is None else options.rerunnable,
        "exec_time": options.exec_time,
        "depend": options.depend,
        "array": array_option(options),
        "submit_host": host,
        "attributes": attributes_of(options),
        "submit_args": " ".join(argv),
    }
    return {
        "submit_id": os.urandom(16).hex(),
        "spec": spec,
        # base64.b64encode, without importing base64 (and struct) for it.
        "payload_b64": b2a_base64(source.payload, newline=False).decode(),
    }


def array_option(options: QsubOptions) -> str | None:
    if options.array is None:
        return None
    step = f":{options.array.step}" if options.array.step != 1 else ""
    return f"{options.array.start}-{options.array.end}{step}"


def check_supported(options: QsubOptions) -> None:
    for name, what in UNSUPPORTED_W.items():
        if name in options.attributes:
            raise UsageError(f"{what} not supported yet by pkbs", show_usage=False)


def script_request(script: str, args: Sequence[str] = ()) -> dict[str, object]:
    """The request `qsub ARGS` makes for `script` given on its standard input, #PBS
    lines read as qsub reads them: for Client.submit_many. Raises the PkbsError qsub
    would report (UsageError, DirectiveError ...) where qsub would refuse."""
    cmdline, operands = parse_qsub_args(list(args))
    if operands:
        raise UsageError("give the script itself, not a script operand", show_usage=False)
    source = Source("stdin", STDIN_NAME, STDIN_NAME, script, script.encode())
    return build_request(_options(cmdline, source), source, list(args))


def _options(cmdline: QsubOptions, source: Source) -> QsubOptions:
    """The command line's options over the script's #PBS directives, checked."""
    prefix = choose_directive_prefix(cmdline.directive_prefix, os.environ)
    options = merge(parse_script_options(source.script, prefix), cmdline)
    check_supported(options)
    return options


def block_until_done(client: Client, job_id: str) -> int:
    import urllib.parse

    path = "/jobs/" + urllib.parse.quote(job_id, safe="") + "/wait"
    while True:
        try:
            result = client.request("GET", path, query={"timeout": 300})
        except KeyboardInterrupt:
            sys.stderr.write(f"qsub: wait for job {job_id} interrupted by signal 2\n")
            return EXIT_USAGE
        attrs = result["jobs"][0]["attributes"]
        if attrs.get("job_state") == "F":
            status = attrs.get("Exit_status")
            if status is None:
                sys.stderr.write(f"qsub: {job_id} Job deleted before it ran\n")
                return EXIT_BLOCK_DELETED
            return exit_code(int(status))


def main(argv: list[str] | None = None) -> None:
    run("qsub", _submit, argv, USAGE)


def _submit(args: list[str]) -> int:
    cmdline, operands = parse_qsub_args(args)
    source = _read_source(operands)
    if len(source.payload) > MAX_PAYLOAD_BYTES:
        from pkbs.payload import check_size  # for its message; rarely needed

        check_size(source.payload)
    options = _options(cmdline, source)
    body = build_request(options, source, args)
    client = Client()
    job_id: str = client.request("POST", "/jobs", body)["job_id"]
    if not options.quiet:
        sys.stdout.write(job_id + "\n")
        sys.stdout.flush()
    return block_until_done(client, job_id) if options.block else 0


if __name__ == "__main__":
    main()
