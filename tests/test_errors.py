"""The error tree across the API: the CLI makes the dispatcher's error class again from
its reply, and every command reports an error and exits the same way."""

from __future__ import annotations

import pytest
from pkbs.cli.command import each_job, report, run

from pkbs import errors
from pkbs.errors import (
    FinishedJob,
    InvalidPayload,
    InvalidRequest,
    PkbsError,
    UnknownJob,
    UsageError,
    from_reply,
)


@pytest.mark.parametrize("cls", errors.REPLY_ERRORS)
def test_a_reply_gives_the_class_the_dispatcher_raised(cls: type[PkbsError]) -> None:
    sent = cls("it went wrong", "7.pkbs")
    fields = sent.to_dict()
    assert fields == {"pbs_errno": sent.pbs_errno, "message": "it went wrong", "job_id": "7.pkbs"}
    got = from_reply(sent.pbs_errno, sent.message, sent.job_id, cls.http_status)
    assert type(got) is cls
    assert (got.pbs_errno, got.message, got.job_id, str(got)) == (
        sent.pbs_errno,
        "it went wrong",
        "7.pkbs",
        "it went wrong 7.pkbs",
    )
    assert got.exit_status == sent.pbs_errno & 0xFF


def test_a_subclass_comes_back_as_the_class_of_its_number_and_status() -> None:
    got = from_reply(errors.PBSE_IVALREQ, "bad zip", None, InvalidPayload.http_status)
    assert type(got) is InvalidRequest
    unknown = from_reply(15999, "new in a later server", None, 400)
    assert (type(unknown), unknown.pbs_errno) == (PkbsError, 15999)
    assert unknown.exit_status == 15999 & 0xFF


def test_report_names_the_job_acted_on_when_the_error_names_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert report("qdel", UnknownJob(), job_id="9.pkbs") == 153
    assert report("qdel", UnknownJob(job_id="8.pkbs"), job_id="9.pkbs") == 153
    assert report("qstat", FinishedJob(job_id="5.pkbs")) == 15139 & 0xFF
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "qdel: Unknown Job Id 9.pkbs",
        "qdel: Unknown Job Id 8.pkbs",
        f"qstat: {FinishedJob.default_message} 5.pkbs",
    ]


def test_run_reports_usage_errors_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(error: PkbsError) -> None:
        def body(args: list[str]) -> int:
            raise error

        with pytest.raises(SystemExit) as info:
            run("qfoo", body, ["-z"], "usage: qfoo\n")
        assert info.value.code == error.exit_status

    refuse(UsageError("invalid option -- 'z'"))
    refuse(UsageError())
    refuse(UsageError("illegal -l value", show_usage=False))
    refuse(InvalidPayload("refused"))
    assert capsys.readouterr().err == (
        "qfoo: invalid option -- 'z'\nusage: qfoo\n"
        "usage: qfoo\n"
        "qfoo: illegal -l value\n"
        "qfoo: refused\n"
    )


def test_run_answers_version_and_exits_only_on_failure(capsys: pytest.CaptureFixture[str]) -> None:
    run("qfoo", lambda args: 0, [], "")
    run("qfoo", lambda args: None, ["--version"], "")
    assert capsys.readouterr().out.startswith("pbs_version = pkbs ")
    with pytest.raises(SystemExit) as info:
        run("qfoo", lambda args: 3, [], "")
    assert info.value.code == 3


def test_each_job_goes_on_after_an_error_and_exits_with_the_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def act(job_id: str) -> None:
        if job_id != "2.pkbs":
            raise UnknownJob() if job_id == "1.pkbs" else FinishedJob()

    assert each_job("qhold", ["1.pkbs", "2.pkbs", "3.pkbs"], act) == 15139 & 0xFF
    assert capsys.readouterr().err.splitlines() == [
        "qhold: Unknown Job Id 1.pkbs",
        f"qhold: {FinishedJob.default_message} 3.pkbs",
    ]
    assert each_job("qhold", ["2.pkbs"], act) == 0
