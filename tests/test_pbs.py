"""Unit tests for pkbs.pbsvalues and pkbs.qsuboptions: PBS syntax, checked against OpenPBS
behaviour."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from pkbs import pbsvalues, qsuboptions
from pkbs.errors import BadAttributeValue, UnknownJob, UnknownResource
from pkbs.pbsvalues import ArrayRange, JobId
from pkbs.qsuboptions import DirectiveError, QsubOptions, UsageError

# --------------------------------------------------------------------------- job ids


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123", JobId(123, None, False, "dflt")),
        ("123.pkbs", JobId(123, None, False, "pkbs")),
        ("123.pkbs.example.com", JobId(123, None, False, "pkbs")),
        ("123[]", JobId(123, None, True, "dflt")),
        ("123[].pkbs", JobId(123, None, True, "pkbs")),
        ("123[4].pkbs", JobId(123, 4, True, "pkbs")),
        ("123[4]", JobId(123, 4, True, "dflt")),
        ("  7.svr  ", JobId(7, None, False, "svr")),
        ("0", JobId(0, None, False, "dflt")),
    ],
)
def test_parse_job_id(text: str, expected: JobId) -> None:
    assert pbsvalues.parse_job_id(text, "dflt") == expected


def test_parse_job_id_without_default_server() -> None:
    assert pbsvalues.parse_job_id("42").server is None
    assert pbsvalues.parse_job_id("42").format() == "42"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "12a",
        "-1",
        "123.",
        "123[1-5]",
        "123[",
        "123[x]",
        "123.pkbs@host",
        "123 .pkbs",
        "[]",
        "1 2",
        "123.pkbs[4]",
        "١٢٣",
    ],
)
def test_parse_job_id_rejects_garbage_as_unknown_job(text: str) -> None:
    with pytest.raises(UnknownJob) as info:
        pbsvalues.parse_job_id(text, "pkbs")
    assert info.value.job_id == text
    assert str(info.value) == f"Unknown Job Id {text}"


@pytest.mark.parametrize(
    ("job", "text"),
    [
        (JobId(123, server="pkbs"), "123.pkbs"),
        (JobId(123, is_array=True, server="pkbs"), "123[].pkbs"),
        (JobId(123, 4, True, "pkbs"), "123[4].pkbs"),
        (JobId(9), "9"),
    ],
)
def test_job_id_format(job: JobId, text: str) -> None:
    assert job.format() == text
    assert str(job) == text
    assert pbsvalues.parse_job_id(text) == job


def test_job_id_format_default_server_only_when_missing() -> None:
    assert JobId(5).format("fallback") == "5.fallback"
    assert JobId(5, server="own").format("fallback") == "5.own"


def test_format_job_id() -> None:
    assert pbsvalues.format_job_id(12, "svr") == "12.svr"
    assert pbsvalues.format_job_id(12, "svr", array=True) == "12[].svr"
    assert pbsvalues.format_job_id(12, "svr", index=3) == "12[3].svr"
    assert pbsvalues.format_job_id(12, "svr", index=0, array=True) == "12[0].svr"
    assert pbsvalues.format_job_id(12) == "12"


def test_job_id_is_an_immutable_value() -> None:
    job = JobId(7, 2, True, "s")
    assert job == JobId(number=7, index=2, is_array=True, server="s")
    assert hash(job) == hash(JobId(7, 2, True, "s"))
    assert job != JobId(7, 2, True, "t")
    assert repr(job) == "JobId(number=7, index=2, is_array=True, server='s')"
    assert pickle.loads(pickle.dumps(job)) == job
    with pytest.raises(AttributeError):
        job.number = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        JobId()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        JobId(7, number=7)  # type: ignore[misc]


def test_job_id_array_helpers() -> None:
    sub = pbsvalues.parse_job_id("12[3].s")
    assert sub.is_subjob
    assert sub.array_id == JobId(12, None, True, "s")
    assert not sub.array_id.is_subjob
    assert sub.array_id.subjob(7).format() == "12[7].s"
    with pytest.raises(ValueError):
        JobId(12, server="s").subjob(1)


@pytest.mark.parametrize(
    "kwargs",
    [{"number": -1}, {"number": 1, "index": 2}, {"number": 1, "index": -1, "is_array": True}],
)
def test_job_id_rejects_inconsistent_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        JobId(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600.0),
        ("0", 0.0),
        ("59", 59.0),
        ("1:30", 90.0),
        ("01:00:00", 3600.0),
        ("100:00:00", 360000.0),
        ("90:00", 5400.0),
        ("1:2:3", 3723.0),
        ("10.5", 10.5),
        ("00:00:01.250", 1.25),
        ("5.", 5.0),
        (" 12 ", 12.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert pbsvalues.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "abc", "1:2:3:4", ":30", "1:", ".5", "1h", "-5", "1:xx", "1 2", "1:2.3:4"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(BadAttributeValue, match="Illegal attribute or resource value"):
        pbsvalues.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "00:00:00"),
        (59, "00:00:59"),
        (3600, "01:00:00"),
        (3723, "01:02:03"),
        (360000 + 61, "100:01:01"),
        (1.4, "00:00:01"),
        (1.5, "00:00:02"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert pbsvalues.format_duration(seconds) == text


@pytest.mark.parametrize("text", ["00:00:00", "01:02:03", "99:59:59", "123:00:01"])
def test_duration_round_trip(text: str) -> None:
    assert pbsvalues.format_duration(pbsvalues.parse_duration(text)) == text


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        pbsvalues.format_duration(-1)


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("0", 0),
        ("100", 100),
        ("100b", 100),
        ("1k", 1024),
        ("1kb", 1024),
        ("1KB", 1024),
        ("2mb", 2 * 1024**2),
        ("2gb", 2 * 1024**3),
        ("8GB", 8 * 1024**3),
        ("1tb", 1024**4),
        ("1pb", 1024**5),
        ("3w", 24),
        ("1kw", 8192),
        ("1Mw", 8 * 1024**2),
    ],
)
def test_parse_size(text: str, nbytes: int) -> None:
    assert pbsvalues.parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "gb", "1.5gb", "1xb", "1kbb", "1bk", "-1kb", "1 kb", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(BadAttributeValue):
        pbsvalues.parse_size(text)


@pytest.mark.parametrize(
    ("nbytes", "unit", "text"),
    [
        (0, "kb", "0kb"),
        (1, "kb", "1kb"),
        (1024, "kb", "1kb"),
        (1025, "kb", "2kb"),
        (1263616, "kb", "1234kb"),
        (2 * 1024**3, "gb", "2gb"),
        (2 * 1024**3 + 1, "gb", "3gb"),
        (100, "b", "100b"),
        (5 * 1024**2, "mb", "5mb"),
    ],
)
def test_format_size(nbytes: int, unit: str, text: str) -> None:
    assert pbsvalues.format_size(nbytes, unit) == text


def test_format_size_defaults_to_kb() -> None:
    assert pbsvalues.format_size(4096) == "4kb"


@pytest.mark.parametrize("text", ["0kb", "1kb", "1234kb", "99999999kb"])
def test_size_round_trip(text: str) -> None:
    assert pbsvalues.format_size(pbsvalues.parse_size(text)) == text


def test_format_size_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pbsvalues.format_size(1, "kib")
    with pytest.raises(ValueError):
        pbsvalues.format_size(-1)


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(0, "0b"), (1000, "1000b"), (3 << 30, "3gb"), (1536 << 20, "1536mb"), (8 << 50, "8pb")],
)
def test_format_size_exact(nbytes: int, text: str) -> None:
    assert pbsvalues.format_size(nbytes, "exact") == text


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (3 << 20, "3.0 MiB"),
        (5 << 30, "5120.0 MiB"),
    ],
)
def test_format_size_for_people(nbytes: int, text: str) -> None:
    assert pbsvalues.format_size(nbytes, "iec") == text


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("59", "00:00:59"),
        ("1:30", "00:01:30"),
        ("3600", "01:00:00"),
        ("59.5", "00:01:00"),
        ("59.499", "00:00:59"),
        ("100:00:00", "100:00:00"),
        ("1:2:3:4", "1:2:3:4"),
        ("soon", "soon"),
    ],
)
def test_normalize_duration(text: str, normal: str) -> None:
    assert pbsvalues.normalize_duration(text) == normal


@pytest.mark.parametrize(
    ("text", "normal"),
    [("1GB", "1gb"), ("1024", "1024b"), ("2g", "2gb"), ("4kw", "4kw"), ("lots", "lots")],
)
def test_normalize_size(text: str, normal: str) -> None:
    assert pbsvalues.normalize_size(text) == normal


def test_normalize_resource_by_kind() -> None:
    assert pbsvalues.normalize_resource("Walltime", "90") == "00:01:30"
    assert pbsvalues.normalize_resource("accelerator_memory", "2GB") == "2gb"
    assert pbsvalues.normalize_resource("ncpus", "04") == "04"
    assert pbsvalues.normalize_resource("software", "1GB") == "1GB"


# --------------------------------------------------------------------------- resources


@pytest.mark.parametrize(
    ("resources", "message"),
    [({"foo": "1"}, "Unknown resource Resource_List.foo"),
     ({"select": "2:ncpus=1:Bar=x"}, "Unknown resource: bar")],
)
def test_unknown_resources_are_refused(resources: dict[str, str], message: str) -> None:
    with pytest.raises(UnknownResource) as info:
        pbsvalues.check_resources(resources)
    assert (info.value.message, info.value.exit_status) == (message, 15035 & 0xFF)


def test_known_resources() -> None:
    """The one list of resources pkbs knows: name, kind of value, host-level."""
    d, s, c, t = "duration", "size", "count", "text"
    known = {
        "walltime": (d, False),
        "cput": (d, False),
        "pcput": (d, False),
        "soft_walltime": (d, False),
        "min_walltime": (d, False),
        "max_walltime": (d, False),
        "mem": (s, True),
        "vmem": (s, True),
        "pmem": (s, False),
        "pvmem": (s, False),
        "file": (s, False),
        "hbmem": (s, True),
        "accelerator_memory": (s, True),
        "ncpus": (c, True),
        "ngpus": (c, True),
        "naccelerators": (c, True),
        "mpiprocs": (c, True),
        "ompthreads": (c, True),
        "nchunk": (c, True),
        "nodect": (c, False),
        "arch": (t, True),
        "host": (t, True),
        "vnode": (t, True),
        "vntype": (t, True),
        "aoe": (t, True),
        "eoe": (t, True),
        "accelerator": (t, True),
        "accelerator_model": (t, True),
        "accelerator_group": (t, True),
        "nodes": (t, False),
        "software": (t, False),
        "site": (t, False),
        "nice": (t, False),
        "select": ("select", False),
        "place": ("place", False),
    }
    assert {name: (kind, host) for name, kind, host in pbsvalues.KNOWN_RESOURCES} == known
    assert len(pbsvalues.KNOWN_RESOURCES) == len(known)
    host_level = {name for name, (_, host) in known.items() if host}
    assert host_level == pbsvalues.HOST_LEVEL_RESOURCES
    assert all(pbsvalues.resource_kind(name) == kind for name, (kind, _) in known.items())
    assert pbsvalues.resource_kind("MEM") == s
    assert pbsvalues.resource_kind("software") == t



@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ncpus=4", {"ncpus": "4"}),
        (
            "ncpus=4,mem=2gb,walltime=01:00:00",
            {"ncpus": "4", "mem": "2gb", "walltime": "01:00:00"},
        ),
        (
            "select=2:ncpus=4:mem=8gb+1:ncpus=1",
            {"select": "2:ncpus=4:mem=8gb+1:ncpus=1"},
        ),
        ("place=scatter:excl", {"place": "scatter:excl"}),
        ("select=1:ncpus=2,place=pack", {"select": "1:ncpus=2", "place": "pack"}),
        ("NCPUS=2", {"ncpus": "2"}),
        ("walltime=1:00,walltime=2:00", {"walltime": "2:00"}),
        ('software="a,b"', {"software": "a,b"}),
        ("ncpus=2 mem=1gb", {"ncpus": "2", "mem": "1gb"}),
        (" ncpus=2", {"ncpus": "2"}),
        ("foo=bar", {"foo": "bar"}),
        ("nodes=2:ppn=4", {"nodes": "2:ppn=4"}),
        ("select=3", {"select": "3"}),
    ],
)
def test_parse_resource_list(text: str, expected: dict[str, str]) -> None:
    assert pbsvalues.parse_resource_list(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty resource list"),
        ("ncpus", "expected resource=value"),
        ("=4", "expected resource=value"),
        ("ncpus=", "has no value"),
        ("ncpus=4,", "trailing comma"),
        ("ncpus=4,,mem=1gb", "expected resource=value"),
        ("ncpus=four", "Resource_List.ncpus"),
        ("ncpus=-1", "Resource_List.ncpus"),
        ("mpiprocs=1.5", "Resource_List.mpiprocs"),
        ("mem=2gg", "Resource_List.mem"),
        ("vmem=lots", "Resource_List.vmem"),
        ("walltime=1h", "Resource_List.walltime"),
        ("cput=x", "Resource_List.cput"),
        ("software='open", "unterminated quote"),
        ("foo=a&b", "illegal character"),
        ("select=0:ncpus=1", "count below 1"),
        ("select=1:ncpus=2+", "empty chunk"),
        ("select=+1:ncpus=2", "empty chunk"),
        ("select=1:ncpus", "expected resource=value"),
        ("select=1:ncpus=", "expected resource=value"),
        ("select=1:ncpus=x", "Resource_List.select"),
        ("select=1:mem=1zb", "Resource_List.select"),
        ("select=1:ncpus=1:ncpus=2", "duplicated resource"),
        ("select=1:walltime=1:00", 'invalid in "select"'),
        ("place=spread", "place"),
        ("place=scatter:pack", "arrangement twice"),
        ("place=excl:shared", "sharing twice"),
        ("place=group=", "place"),
        ("place=", "has no value"),
    ],
)
def test_parse_resource_list_rejects(text: str, fragment: str) -> None:
    with pytest.raises(BadAttributeValue, match="Illegal attribute or resource value") as info:
        pbsvalues.parse_resource_list(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:ncpus=2", [(1, {"ncpus": "2"})]),
        ("ncpus=2:mem=1gb", [(1, {"ncpus": "2", "mem": "1gb"})]),
        ("2:ncpus=4:mem=8gb+1:ncpus=1", [(2, {"ncpus": "4", "mem": "8gb"}), (1, {"ncpus": "1"})]),
        ("4", [(4, {})]),
        ("1:host=n1:Color=red", [(1, {"host": "n1", "color": "red"})]),
        ("1:arch='x:y+z'+2", [(1, {"arch": "x:y+z"}), (2, {})]),
        ('1:host="a"', [(1, {"host": "a"})]),
    ],
)
def test_parse_select(text: str, expected: list[tuple[int, dict[str, str]]]) -> None:
    assert pbsvalues.parse_select(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("free", {"arrangement": "free"}),
        ("vscatter", {"arrangement": "vscatter"}),
        ("scatter:excl", {"arrangement": "scatter", "sharing": "excl"}),
        ("exclhost", {"sharing": "exclhost"}),
        (
            "pack:shared:group=switch",
            {"arrangement": "pack", "sharing": "shared", "group": "switch"},
        ),
        ("group=rack:excl", {"group": "rack", "sharing": "excl"}),
    ],
)
def test_parse_place(text: str, expected: dict[str, str]) -> None:
    assert pbsvalues.parse_place(text) == expected


@pytest.mark.parametrize(
    ("resources", "ncpus"),
    [
        ({}, 1),
        ({"ncpus": "4"}, 4),
        ({"select": "2:ncpus=4:mem=8gb+1:ncpus=1"}, 9),
        ({"select": "3"}, 3),
        ({"select": "2:mem=1gb"}, 2),
        ({"select": "1:ncpus=0"}, 0),
        ({"nodes": "2:ppn=4"}, 8),
        ({"nodes": "2:ppn=4+n3"}, 9),
        ({"nodes": "3"}, 3),
        ({"walltime": "1:00:00"}, 1),
    ],
)
def test_job_ncpus(resources: dict[str, str], ncpus: int) -> None:
    assert pbsvalues.job_ncpus(resources) == ncpus


@pytest.mark.parametrize(
    ("resources", "nbytes"),
    [
        ({}, None),
        ({"mem": "2gb"}, 2 * 1024**3),
        ({"select": "2:ncpus=1:mem=1gb+1:mem=512mb"}, 2 * 1024**3 + 512 * 1024**2),
        ({"select": "2:ncpus=1"}, None),
        ({"select": "2:ncpus=1+1:mem=1kb"}, 1024),
    ],
)
def test_job_mem_bytes(resources: dict[str, str], nbytes: int | None) -> None:
    assert pbsvalues.job_mem_bytes(resources) == nbytes


@pytest.mark.parametrize(
    ("resources", "seconds"),
    [({}, None), ({"walltime": "01:30:00"}, 5400.0), ({"walltime": "45"}, 45.0)],
)
def test_job_walltime(resources: dict[str, str], seconds: float | None) -> None:
    assert pbsvalues.job_walltime(resources) == seconds


@pytest.mark.parametrize(
    ("resources", "fragment"),
    [
        ({"select": "1:ncpus=1", "nodes": "1"}, "Cannot be used with select or place"),
        ({"place": "scatter", "nodes": "1"}, "Cannot be used with select or place"),
        ({"select": "1:ncpus=1", "ncpus": "2"}, "resource is: ncpus"),
        ({"select": "1:ncpus=1", "mem": "1gb"}, "resource is: mem"),
        ({"place": "scatter", "vmem": "1gb"}, "resource is: vmem"),
        ({"place": "scatter"}, 'Cannot have "place" without "select"'),
    ],
)
def test_check_resources_rejects(resources: dict[str, str], fragment: str) -> None:
    with pytest.raises(BadAttributeValue) as info:
        pbsvalues.check_resources(resources)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "resources",
    [
        {},
        {"ncpus": "2", "mem": "1gb", "nodes": "1"},
        {"select": "1:ncpus=1", "place": "scatter", "walltime": "1:00:00"},
        {"select": "1:ncpus=1", "software": "x"},
    ],
)
def test_check_resources_accepts(resources: dict[str, str]) -> None:
    pbsvalues.check_resources(resources)


# --------------------------------------------------------------------------- directives


def test_extract_directives_stops_at_first_command() -> None:
    script = "#!/bin/bash\n#PBS -N first\n#PBS -l ncpus=2\necho hi\n#PBS -N late\n"
    assert qsuboptions.extract_directives(script) == [(2, ["-N", "first"]), (3, ["-l", "ncpus=2"])]


def test_extract_directives_skips_comments_blanks_and_colon_lines() -> None:
    script = (
        "#!/bin/sh\n"
        "\n"
        "# a comment\n"
        "   # an indented comment\n"
        "#PBS -N a\n"
        ": a colon line\n"
        "\t\n"
        "   #PBS -q workq\n"
        "#PBS -j oe # not a comment for PBS\n"
        "true\n"
        "#PBS -N never\n"
    )
    assert qsuboptions.extract_directives(script) == [
        (5, ["-N", "a"]),
        (8, ["-q", "workq"]),
        (9, ["-j", "oe", "#", "not", "a", "comment", "for", "PBS"]),
    ]


def test_extract_directives_indented_colon_is_executable() -> None:
    assert qsuboptions.extract_directives("  : x\n#PBS -N a\n") == []


def test_extract_directives_continuation_lines() -> None:
    script = (
        "#PBS -l select=1:ncpus=2\\\n:mem=1gb\\  \n,walltime=1:00:00\n#PBS -N a \\\n-q b\necho\n"
    )
    assert qsuboptions.extract_directives(script) == [
        (1, ["-l", "select=1:ncpus=2:mem=1gb,walltime=1:00:00"]),
        (4, ["-N", "a", "-q", "b"]),
    ]


def test_extract_directives_continuation_swallows_command_line_and_ends_at_eof() -> None:
    # The continued line is taken verbatim even if it looks like a command.
    assert qsuboptions.extract_directives("#PBS -N a\\\nb\n#PBS -q q\n") == [
        (1, ["-N", "ab"]),
        (3, ["-q", "q"]),
    ]
    assert qsuboptions.extract_directives("#PBS -N a \\") == [(1, ["-N", "a"])]


def test_extract_directives_quoting() -> None:
    script = "#PBS -N 'my job' -v \"A=1,B='x y'\"\n"
    assert qsuboptions.extract_directives(script) == [(1, ["-N", "my job", "-v", "A=1,B='x y'"])]


@pytest.mark.parametrize(
    ("script", "line"),
    [("#PBS -N 'open\n", 1), ('#!/bin/sh\n# c\n#PBS -N "x\n', 3)],
)
def test_extract_directives_bad_quoting_names_the_line(script: str, line: int) -> None:
    with pytest.raises(DirectiveError) as info:
        qsuboptions.extract_directives(script)
    assert info.value.line == line
    assert f"line {line}" in str(info.value)


@pytest.mark.parametrize(
    ("script", "line"),
    [
        ("#!/bin/sh\r\n#PBS -N a\r\necho\r\n", 1),
        ("#!/bin/sh\n#PBS -N a\necho\r\n", 3),
    ],
)
def test_extract_directives_rejects_crlf(script: str, line: int) -> None:
    with pytest.raises(BadAttributeValue, match=r"^script contains cr, lf$") as info:
        qsuboptions.extract_directives(script)
    assert isinstance(info.value, DirectiveError)
    assert info.value.line == line


def test_extract_directives_lone_cr_is_not_crlf() -> None:
    # A lone CR is only whitespace to the tokenizer (and to OpenPBS's make_argv).
    assert qsuboptions.extract_directives("#PBS -N a\recho\n") == [(1, ["-N", "a", "echo"])]


def test_extract_directives_custom_prefix() -> None:
    script = "#PBS -N ignored\n#MY -N used\n  #MY -q q\necho\n"
    assert qsuboptions.extract_directives(script, "#MY") == [(2, ["-N", "used"]), (3, ["-q", "q"])]


def test_extract_directives_empty_prefix_disables_scanning() -> None:
    assert qsuboptions.extract_directives("#PBS -N a\n", "") == []


def test_extract_directives_empty_prefix_still_rejects_crlf() -> None:
    with pytest.raises(DirectiveError):
        qsuboptions.extract_directives("#PBS -N a\r\n", "")


def test_extract_directives_drops_empty_directives() -> None:
    assert qsuboptions.extract_directives("#PBS\n#PBS   \n#PBS -h\n") == [(3, ["-h"])]


def test_extract_directives_prefix_match_is_a_plain_prefix() -> None:
    # OpenPBS compares only the prefix, so "#PBSX" is a directive whose text is "X".
    assert qsuboptions.extract_directives("#PBSX\n") == [(1, ["X"])]


@pytest.mark.parametrize(
    ("cmdline", "environ", "prefix"),
    [
        (None, {}, "#PBS"),
        (None, {"PBS_DPREFIX": "#MY"}, "#MY"),
        ("#C", {"PBS_DPREFIX": "#MY"}, "#C"),
        ("", {"PBS_DPREFIX": "#MY"}, ""),
    ],
)
def test_choose_directive_prefix(cmdline: str | None, environ: dict[str, str], prefix: str) -> None:
    assert qsuboptions.choose_directive_prefix(cmdline, environ) == prefix


def test_parse_script_options_folds_directives() -> None:
    script = (
        "#!/bin/sh\n"
        "#PBS -N first\n"
        "#PBS -N second\n"
        "#PBS -l walltime=1:00:00,ncpus=2\n"
        "#PBS -l walltime=2:00:00 -l mem=1gb\n"
        "#PBS -W umask=022 -W block=true\n"
        "#PBS -W umask=077\n"
        "#PBS -h\n"
        "#PBS -X\n"
        "echo\n"
    )
    options = qsuboptions.parse_script_options(script)
    assert options.name == "second"
    # OpenPBS set_resource.c: a directive resource is added only if not yet listed.
    assert options.resources == {"walltime": "1:00:00", "ncpus": "2", "mem": "1gb"}
    assert options.attributes == {"umask": "077", "block": "true"}
    assert options.hold is True
    assert options.x11 is True


@pytest.mark.parametrize(
    ("script", "line", "fragment"),
    [
        ("#PBS -N ok\n#PBS -r maybe\n", 2, "illegal -r value"),
        ("#PBS -Q\n", 1, "invalid option"),
        ("#PBS -N a script.sh\n", 1, "unexpected argument"),
        ("#PBS -l ncpus=x\n", 1, "Resource_List.ncpus"),
        ("#PBS -I\n", 1, "interactive"),
        ("#PBS -- /bin/true\n", 1, "unexpected argument"),
        ("#PBSX\n", 1, "unexpected argument"),
        ("#!/bin/sh\n\n#PBS -N\n", 3, "requires an argument"),
    ],
)
def test_parse_script_options_errors_name_the_line(script: str, line: int, fragment: str) -> None:
    with pytest.raises(DirectiveError) as info:
        qsuboptions.parse_script_options(script)
    assert info.value.line == line
    assert str(info.value).startswith(f"directive error on line {line}: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [["-l", "walltime=1:00", "-l", "walltime=2:00"], ["-l", "walltime=1:00,walltime=2:00"]],
)
def test_directive_resources_first_value_wins(argv: list[str]) -> None:
    assert qsuboptions.parse_qsub_args(argv, directive=True)[0].resources == {"walltime": "1:00"}
    assert qsuboptions.parse_qsub_args(argv)[0].resources == {"walltime": "2:00"}


def test_parse_script_options_without_directives_is_empty() -> None:
    assert qsuboptions.parse_script_options("echo hi\n#PBS -N late\n") == QsubOptions()


# --------------------------------------------------------------------------- qsub argv


def test_parse_qsub_args_full_command_line() -> None:
    options, operands = qsuboptions.parse_qsub_args(
        [
            "-N", "job1", "-q", "workq", "-o", "out.txt", "-e", "host:/tmp/err", "-j", "oe",
            "-k", "oe", "-l", "ncpus=2", "-l", "mem=1gb,walltime=10:00", "-h", "-r", "n",
            "-m", "abe", "-M", "a@b,c", "-A", "acct", "-P", "proj", "-p", "-5",
            "-S", "/bin/bash", "-v", "A=1,B", "-V", "-W", "depend=afterok:1.s,umask=022",
            "-C", "#X", "-z", "-f", "-u", "alice", "-c", "n", "-R", "oe", "job.sh",
        ]
    )  # fmt: skip
    assert operands == ["job.sh"]
    assert options == QsubOptions(
        name="job1",
        destination="workq",
        output_path="out.txt",
        error_path="host:/tmp/err",
        join="oe",
        keep="oe",
        resources={"ncpus": "2", "mem": "1gb", "walltime": "10:00"},
        hold=True,
        rerunnable=False,
        mail_points="abe",
        mail_users="a@b,c",
        account="acct",
        project="proj",
        priority=-5,
        shell="/bin/bash",
        variables={"A": "1", "B": None},
        export_env=True,
        attributes={"depend": "afterok:1.s", "umask": "022"},
        directive_prefix="#X",
        quiet=True,
        foreground=True,
        user_list="alice",
        checkpoint="n",
        remove_files="oe",
    )
    assert options.umask == 0o22
    assert options.depend == "afterok:1.s"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-lselect=1:ncpus=2"], QsubOptions(resources={"select": "1:ncpus=2"})),
        (["-Wblock=true"], QsubOptions(attributes={"block": "true"})),
        (["-hN", "name"], QsubOptions(hold=True, name="name")),
        (["-hNname"], QsubOptions(hold=True, name="name")),
        (["-hVz"], QsubOptions(hold=True, export_env=True, quiet=True)),
        (["-Nn", "-N", "m"], QsubOptions(name="m")),
        (["-Wblock=TRUE"], QsubOptions(attributes={"block": "true"})),
        (["-W", "block=false"], QsubOptions(attributes={"block": "false"})),
        (["-W", "interactive=false"], QsubOptions()),
        (["-ry"], QsubOptions(rerunnable=True)),
        (["-J", "0-9"], QsubOptions(array=ArrayRange(0, 9))),
        (["-J1-10:2%3"], QsubOptions(array=ArrayRange(1, 10, 2, 3))),
        (["-C", ""], QsubOptions(directive_prefix="")),
        (["-v", "a=1", "-v", "b=2"], QsubOptions(variables={"b": "2"})),
        (
            ["-l", "walltime=1:00", "-l", "walltime=2:00"],
            QsubOptions(resources={"walltime": "2:00"}),
        ),
        (["-q", "@svr"], QsubOptions(destination="@svr")),
        (["-N", "--"], QsubOptions(name="--")),
        (["-m", " n"], QsubOptions(mail_points="n")),
        (["-W", "sandbox=private"], QsubOptions(attributes={"sandbox": "PRIVATE"})),
        (["-W", "run_count=05"], QsubOptions(attributes={"run_count": "5"})),
        (["-W", "foo=bar"], QsubOptions(attributes={"foo": "bar"})),
    ],
)
def test_parse_qsub_args_getopt_forms(argv: list[str], expected: QsubOptions) -> None:
    options, operands = qsuboptions.parse_qsub_args(argv)
    assert options == expected
    assert operands == []


@pytest.mark.parametrize(
    ("argv", "operands"),
    [
        ([], []),
        (["job.sh"], ["job.sh"]),
        (["-"], ["-"]),
        (["-N", "x", "job.sh"], ["job.sh"]),
        (["--", "/bin/echo", "hi", "-N", "x"], ["--", "/bin/echo", "hi", "-N", "x"]),
        (["-N", "x", "--", "/bin/sleep"], ["--", "/bin/sleep"]),
        (["-N", "--", "--", "exe"], ["--", "exe"]),
    ],
)
def test_parse_qsub_args_operands(argv: list[str], operands: list[str]) -> None:
    assert qsuboptions.parse_qsub_args(argv)[1] == operands


@pytest.mark.parametrize(
    ("argv", "fragment", "show_usage"),
    [
        (["job.sh", "-N", "x"], "must be the last argument", True),
        (["a.sh", "b.sh"], "must be the last argument", True),
        (["--"], "executable must follow", True),
        (["-N", "x", "--"], "executable must follow", True),
        (["-Q"], "invalid option -- 'Q'", True),
        (["-G"], "invalid option -- 'G'", True),
        (["-hQ"], "invalid option -- 'Q'", True),
        (["-N"], "option requires an argument -- 'N'", True),
        (["-I"], "interactive jobs (-I) are not supported", False),
        (["-W", "interactive=true"], "interactive jobs (-I) are not supported", False),
        (["-X"], "X11 Forwarding possible only for interactive jobs", False),
        (["-r", "x"], "illegal -r value", True),
        (["-r", "yes"], "illegal -r value", True),
        (["-a", "25:00"], "illegal -a value", True),
        (["-a", "2500"], "illegal -a value", True),
        (["-j", "oo"], "illegal -j value", False),
        (["-k", "on"], "illegal -k value", False),
        (["-k", "d"], "illegal -k value", False),
        (["-m", "j"], "illegal -m value", False),
        (["-m", "an"], "illegal -m value", False),
        (["-p", "1024"], "illegal -p value", False),
        (["-p", "-1025"], "illegal -p value", False),
        (["-p", "high"], "illegal -p value", False),
        (["-c", "u"], "illegal -c value", False),
        (["-c", "c="], "illegal -c value", False),
        (["-R", "x"], "illegal -R value", False),
        (["-N", "bad name"], "illegal -N value", False),
        (["-N", "x" * 231], "Job name is too long", False),
        (["-J", "5-5"], "illegal -J value", False),
        (["-J", "1-5:0"], "illegal -J value", False),
        (["-S", "bash"], "illegal -S value", False),
        (["-S", "/bin/sh,/bin/bash"], "illegal -S value", False),
        (["-M", "a,,b"], "illegal -M value", False),
        (["-q", "a b"], "illegally formed destination: a b", False),
        (["-q", "q@"], "illegally formed destination", False),
        (["-q", "q" * 16], "illegally formed destination", False),
        (["-W", "block"], "illegal -W value", True),
        (["-W", "=x"], "illegal -W value", True),
        (["-W", "block=maybe"], "illegal -W value", False),
        (["-W", "umask=9"], "illegal -W value", False),
        (["-W", "sandbox=elsewhere"], "illegal -W value", False),
        (["-W", "depend=afterok"], "illegal -W value", False),
        (["-W", "depend=afterok:1[2]"], "subjob", False),
        (["-W", "stagein=nohost"], "illegal -W value", False),
        (["-W", "run_count=-1"], "illegal -W value", False),
        (["-J", "1-5%2", "-W", "max_run_subjobs=3"], "multiple max_run_subjobs", False),
    ],
)
def test_parse_qsub_args_usage_errors(argv: list[str], fragment: str, show_usage: bool) -> None:
    with pytest.raises(UsageError) as info:
        qsuboptions.parse_qsub_args(argv)
    assert fragment in str(info.value)
    assert info.value.show_usage is show_usage


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-l", "walltime=forever"], "Resource_List.walltime"),
        (["-l", "ncpus=2,"], "trailing comma"),
        (["-v", "A='x"], "cannot send environment with the job"),
    ],
)
def test_parse_qsub_args_value_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(BadAttributeValue) as info:
        qsuboptions.parse_qsub_args(argv)
    assert fragment in str(info.value)


def test_parse_qsub_args_exec_time_uses_now(utc: None) -> None:
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    options, _ = qsuboptions.parse_qsub_args(["-a", "2330"], now=now)
    assert options.exec_time == pbsvalues.parse_exec_time("2330", now)
    assert time.gmtime(options.exec_time)[:5] == (2023, 11, 14, 23, 30)


# --------------------------------------------------------------------------- merge


def test_merge_command_line_wins() -> None:
    directives = qsuboptions.parse_script_options(
        "#PBS -N fromscript -q scriptq -l walltime=1:00:00,ncpus=2 -W umask=022\n"
        "#PBS -W depend=afterok:1 -m ae -v A=1 -h -J 1-3\n"
    )
    cmdline, _ = qsuboptions.parse_qsub_args(
        ["-N", "fromcli", "-l", "ncpus=4", "-W", "umask=077", "-v", "B=2", "-z"]
    )
    merged = qsuboptions.merge(directives, cmdline)
    assert merged.name == "fromcli"
    assert merged.destination == "scriptq"
    assert merged.resources == {"walltime": "1:00:00", "ncpus": "4"}
    assert merged.attributes == {"umask": "077", "depend": "afterok:1"}
    assert merged.mail_points == "ae"
    assert merged.variables == {"B": "2"}
    assert merged.hold is True
    assert merged.quiet is True
    assert merged.array == ArrayRange(1, 3)


def test_merge_keeps_false_from_command_line() -> None:
    directives, _ = qsuboptions.parse_qsub_args(["-r", "y", "-p", "5"])
    cmdline, _ = qsuboptions.parse_qsub_args(["-r", "n", "-p", "0"])
    merged = qsuboptions.merge(directives, cmdline)
    assert merged.rerunnable is False
    assert merged.priority == 0


def test_merge_with_empty_directives_is_identity() -> None:
    cmdline, _ = qsuboptions.parse_qsub_args(["-N", "x", "-l", "ncpus=1"])
    assert qsuboptions.merge(QsubOptions(), cmdline) == cmdline


@pytest.mark.parametrize(
    ("script", "argv", "fragment"),
    [
        ("", ["-m", "abj"], "mail option 'j' can not be used without array job"),
        ("#PBS -J 1-3\n", ["-r", "n"], "cannot submit non-rerunable Array Job"),
        ("#PBS -J 1-3%2\n", ["-W", "max_run_subjobs=1"], "multiple max_run_subjobs"),
    ],
)
def test_merge_cross_option_errors(script: str, argv: list[str], fragment: str) -> None:
    directives = qsuboptions.parse_script_options(script)
    cmdline, _ = qsuboptions.parse_qsub_args(argv)
    with pytest.raises(UsageError, match=fragment):
        qsuboptions.merge(directives, cmdline)


def test_merge_mail_j_allowed_with_array_from_script() -> None:
    directives = qsuboptions.parse_script_options("#PBS -J 1-3\n")
    cmdline, _ = qsuboptions.parse_qsub_args(["-m", "abj"])
    assert qsuboptions.merge(directives, cmdline).mail_points == "abj"


def test_merge_checks_resources_across_sources() -> None:
    directives = qsuboptions.parse_script_options("#PBS -l select=1:ncpus=2\n")
    cmdline, _ = qsuboptions.parse_qsub_args(["-l", "mem=1gb"])
    with pytest.raises(BadAttributeValue, match="resource is: mem"):
        qsuboptions.merge(directives, cmdline)


def test_qsub_options_properties() -> None:
    options = QsubOptions(attributes={"block": "true", "max_run_subjobs": "4", "umask": "027"})
    assert options.block is True
    assert options.max_run_subjobs == 4
    assert options.umask == 0o27
    assert options.depend is None
    assert QsubOptions().block is False
    assert QsubOptions().umask is None
    assert QsubOptions().max_run_subjobs is None
    assert QsubOptions(array=ArrayRange(1, 4, 1, 2)).max_run_subjobs == 2


def test_qsub_options_is_frozen() -> None:
    options = QsubOptions()
    with pytest.raises(AttributeError):
        options.name = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- option values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1,b='x,y',C", {"a": "1", "b": "x,y", "C": None}),
        ("A", {"A": None}),
        ('X="a b",Y=2', {"X": "a b", "Y": "2"}),
        (r"P=a\,b", {"P": "a,b"}),
        (r"P=c:\dir", {"P": r"c:\dir"}),
        ("E=", {"E": ""}),
        ("K=v=w", {"K": "v=w"}),
        (" a=1, b=2", {"a": "1", "b": "2"}),
        ("a=1,a=2", {"a": "2"}),
        ("Q='say \"hi\"'", {"Q": 'say "hi"'}),
    ],
)
def test_parse_variable_list(text: str, expected: dict[str, str | None]) -> None:
    assert qsuboptions.parse_variable_list(text) == expected


@pytest.mark.parametrize("text", ["", "a=1,,b=2", "a=1,", "=1", "a='x", "Q=it's", "a b=1"])
def test_parse_variable_list_rejects(text: str) -> None:
    with pytest.raises(BadAttributeValue, match="cannot send environment with the job"):
        qsuboptions.parse_variable_list(text)


@pytest.mark.parametrize(
    ("text", "expected", "indices"),
    [
        ("1-5", ArrayRange(1, 5, 1, None), [1, 2, 3, 4, 5]),
        ("0-9", ArrayRange(0, 9), list(range(10))),
        ("2-7:2", ArrayRange(2, 7, 2, None), [2, 4, 6]),
        ("1-10%3", ArrayRange(1, 10, 1, 3), list(range(1, 11))),
        ("1-10:5%0", ArrayRange(1, 10, 5, 0), [1, 6]),
    ],
)
def test_parse_array_range(text: str, expected: ArrayRange, indices: list[int]) -> None:
    parsed = pbsvalues.parse_array_range(text)
    assert parsed == expected
    assert list(parsed.indices()) == indices
    assert parsed.format() == text


def test_array_range_unpacks_as_tuple() -> None:
    start, end, step, max_running = pbsvalues.parse_array_range("3-9:3%2")
    assert (start, end, step, max_running) == (3, 9, 3, 2)


@pytest.mark.parametrize(
    "text", ["", "5", "5-", "-5", "5-1", "3-3", "1-5:0", "1-5:", "a-b", "1-5%", "1-5%x", "1 - 5"]
)
def test_parse_array_range_rejects(text: str) -> None:
    with pytest.raises(BadAttributeValue):
        pbsvalues.parse_array_range(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("afterok:12", [("afterok", ["12.svr"])]),
        (
            "afterok:12.pkbs:13,afterany:14[]",
            [("afterok", ["12.pkbs", "13.svr"]), ("afterany", ["14[].svr"])],
        ),
        ("after:1.a.b.c", [("after", ["1.a"])]),
        ("afternotok:1,before:2", [("afternotok", ["1.svr"]), ("before", ["2.svr"])]),
        (
            "beforeok:3,beforenotok:4,beforeany:5",
            [("beforeok", ["3.svr"]), ("beforenotok", ["4.svr"]), ("beforeany", ["5.svr"])],
        ),
        ("on:2", [("on", ["2"])]),
        (" afterok:1 , on:03", [("afterok", ["1.svr"]), ("on", ["3"])]),
    ],
)
def test_parse_depend(text: str, expected: list[tuple[str, list[str]]]) -> None:
    assert pbsvalues.parse_depend(text, "svr") == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "unknown dependency type"),
        ("afterok", "expected afterok:<jobid>"),
        ("afterok:", "expected afterok:<jobid>"),
        ("afterok:1:", "expected afterok:<jobid>"),
        ("afterok:1,", "unknown dependency type"),
        ("whenever:1", "unknown dependency type"),
        ("synccount:2", "unknown dependency type"),
        ("afterok:abc", "is not a job id"),
        ("afterok:1[2]", "cannot have dependancy on subjob or range"),
        ("afterok:1[1-3]", "is not a job id"),
        ("on", "expected on:<count>"),
        ("on:x", "whole number"),
        ("on:1:2", "expected on:<count>"),
    ],
)
def test_parse_depend_rejects(text: str, fragment: str) -> None:
    with pytest.raises(BadAttributeValue) as info:
        pbsvalues.parse_depend(text)
    assert fragment in str(info.value)


@pytest.fixture
def utc() -> Iterator[None]:
    """Run in UTC so local-time arithmetic is predictable."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _utc(*fields: int) -> float:
    return float(time.mktime((*fields, 0, 0, -1)))  # type: ignore[arg-type]


# now = Wednesday 2024-03-13 14:30:20 UTC
NOW_FIELDS = (2024, 3, 13, 14, 30, 20)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1600", (2024, 3, 13, 16, 0, 0)),  # later today
        ("1430", (2024, 3, 14, 14, 30, 0)),  # the current minute has passed -> tomorrow
        ("1431", (2024, 3, 13, 14, 31, 0)),
        ("0900", (2024, 3, 14, 9, 0, 0)),  # earlier today -> tomorrow
        ("1600.45", (2024, 3, 13, 16, 0, 45)),
        ("200900", (2024, 3, 20, 9, 0, 0)),  # a later day this month
        ("130900", (2024, 3, 13, 9, 0, 0)),  # today, even if the time passed
        ("100900", (2024, 4, 10, 9, 0, 0)),  # an earlier day -> next month
        ("04010900", (2024, 4, 1, 9, 0, 0)),  # a later month this year
        ("03010900", (2024, 3, 1, 9, 0, 0)),  # this month stays this year
        ("02010900", (2025, 2, 1, 9, 0, 0)),  # an earlier month -> next year
        ("2301020304", (2023, 1, 2, 3, 4, 0)),  # YY: in the past, as given
        ("6901020304", (1969, 1, 2, 3, 4, 0)),  # YY > 68 is 19YY
        ("202512312359.59", (2025, 12, 31, 23, 59, 59)),
        ("02310900", (2025, 3, 3, 9, 0, 0)),  # Feb 31 next year, normalised as mktime does
    ],
)
def test_parse_exec_time(utc: None, text: str, expected: tuple[int, ...]) -> None:
    assert pbsvalues.parse_exec_time(text, _utc(*NOW_FIELDS)) == _utc(*expected)


def test_parse_exec_time_rolls_over_month_and_year_end(utc: None) -> None:
    now = _utc(2024, 12, 31, 23, 0, 0)
    assert pbsvalues.parse_exec_time("2200", now) == _utc(2025, 1, 1, 22, 0, 0)
    assert pbsvalues.parse_exec_time("150800", now) == _utc(2025, 1, 15, 8, 0, 0)


def test_parse_exec_time_defaults_now_to_clock(utc: None) -> None:
    stamp = pbsvalues.parse_exec_time("0000")
    assert time.time() < stamp <= time.time() + 86400


@pytest.mark.parametrize(
    "text",
    [
        "",
        "123",
        "12345",
        "2400",
        "1260",
        "1200.60",
        "1200.5",
        "1200.",
        "321200",
        "001200",
        "13011200",
        "00011200",
        "12:00",
        "abcd",
        "1200000",
        "12345678901234",
    ],
)
def test_parse_exec_time_rejects(utc: None, text: str) -> None:
    with pytest.raises(BadAttributeValue):
        pbsvalues.parse_exec_time(text, _utc(*NOW_FIELDS))


@pytest.mark.parametrize(
    "name", ["STDIN", "job", "a", "1job", "my-job_2.sh", "x+y", "A" * 230, "dask-worker"]
)
def test_validate_job_name_accepts(name: str) -> None:
    assert qsuboptions.validate_job_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("A" * 231, "Job name is too long"),
        ("my job", "may hold only"),
        ("job/1", "may hold only"),
        ("a@b", "may hold only"),
        ("tab\t", "may hold only"),
        ("nf-(1)", "may hold only"),
        ("café", "may hold only"),
    ],
)
def test_validate_job_name_rejects(name: str, fragment: str) -> None:
    with pytest.raises(BadAttributeValue) as info:
        qsuboptions.validate_job_name(name)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["workq", "q1", "1q", "long_queue-2", "Q" * 15])
def test_validate_queue_name_accepts(name: str) -> None:
    assert qsuboptions.validate_queue_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Q" * 16, "Queue name too long"),
        ("", "Invalid object name"),
        ("_q", "Invalid object name"),
        ("-q", "Invalid object name"),
        ("q.x", "Invalid object name"),
        ("q q", "Invalid object name"),
        ("q@s", "Invalid object name"),
    ],
)
def test_validate_queue_name_rejects(name: str, fragment: str) -> None:
    with pytest.raises(BadAttributeValue, match=fragment):
        qsuboptions.validate_queue_name(name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("workq", ("workq", None)),
        ("@svr", (None, "svr")),
        ("q@svr.example.com", ("q", "svr.example.com")),
        ("", (None, None)),
        (" q", ("q", None)),
    ],
)
def test_parse_destination(text: str, expected: tuple[str | None, str | None]) -> None:
    assert qsuboptions.parse_destination(text) == expected


@pytest.mark.parametrize(
    ("validator", "good", "bad"),
    [
        (qsuboptions.validate_join, ["oe", "eo", "n"], ["", "o", "e", "oen", "OE"]),
        (
            qsuboptions.validate_keep,
            ["e", "o", "eo", "oe", "n", "dn", "doe", "nd", "ed"],
            ["", "d", "on", "en", "x", "oex"],
        ),
        (
            qsuboptions.validate_mail_points,
            ["n", "a", "abe", "ea", "abej", "aj"],
            ["", "j", "an", "x"],
        ),
        (
            qsuboptions.validate_checkpoint,
            ["n", "s", "c", "w", "c=10", "w=5"],
            ["u", "", "x", "c=", "n=1"],
        ),
        (qsuboptions.validate_remove_files, ["o", "e", "oe", "eo"], ["", "n", "oex"]),
        (
            qsuboptions.validate_user_list,
            ["alice", "a@h,b", "a@h.example.com"],
            ["", "a,", "a b", "@h"],
        ),
        (
            qsuboptions.validate_shell_path_list,
            ["/bin/sh", "/bin/sh@h1,/bin/bash@h2"],
            ["sh", "/a,/b"],
        ),
        (qsuboptions.validate_umask, ["022", "0077", "7"], ["", "8", "00000", "u=rwx"]),
        (
            qsuboptions.validate_stage_list,
            ["in.dat@host:/data/in.dat", "a@h:/x,b@h:/y", "my file@h:/p q"],
            ["", "a:/x", "a@h", "a@:/x", "@h:/x"],
        ),
    ],
)
def test_validators(validator: Callable[[str], str], good: list[str], bad: list[str]) -> None:
    for value in good:
        assert validator(value) == value
    for value in bad:
        with pytest.raises(BadAttributeValue):
            validator(value)


@pytest.mark.parametrize(
    ("text", "priority"), [("0", 0), ("-1024", -1024), ("1023", 1023), (" 7", 7)]
)
def test_parse_priority(text: str, priority: int) -> None:
    assert qsuboptions.parse_priority(text) == priority


@pytest.mark.parametrize(("value", "normal"), [("home", "HOME"), ("O_WORKDIR", "O_WORKDIR")])
def test_validate_sandbox_normalises_case(value: str, normal: str) -> None:
    assert qsuboptions.validate_sandbox(value) == normal


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("block=true", [("block", "true")]),
        ("depend=afterok:1:2,block=true", [("depend", "afterok:1:2"), ("block", "true")]),
        ("depend=afterok:1,afterany:2", [("depend", "afterok:1,afterany:2")]),
        (
            "depend=afterok:1,afterany:2, umask=022",
            [("depend", "afterok:1,afterany:2"), ("umask", "022")],
        ),
        ('x="a=b,c",y=1', [("x", "a=b,c"), ("y", "1")]),
        ("  a = 1 ", [("a", "1")]),
    ],
)
def test_parse_w_attributes(text: str, pairs: list[tuple[str, str]]) -> None:
    assert qsuboptions.parse_w_attributes(text) == pairs


@pytest.mark.parametrize("text", ["", "  ", "block", "=1", "a=", "a=1,", "a=1,=2", "a b=1", 'a="x'])
def test_parse_w_attributes_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="illegal -W value"):
        qsuboptions.parse_w_attributes(text)


# --------------------------------------------------------------------------- import cost


def test_import_is_light() -> None:
    code = (
        "import sys; import pkbs.pbsvalues, pkbs.qsuboptions; "
        "heavy = {'typing', 'argparse', 'pydantic', 'click', 'nats', 'httpx'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


# -- subjob ranges and qsig signal names ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "indices", "server"),
    [
        ("5[2-3]", [2, 3], "pkbs"),
        ("5[2-3].svr.example.com", [2, 3], "svr"),
        ("5[1-10:2]", [1, 3, 5, 7, 9], "pkbs"),
        ("5[1-3,7,2-4]", [1, 2, 3, 7, 4], "pkbs"),
    ],
)
def test_parse_subjob_range(text: str, indices: list[int], server: str) -> None:
    array, found = pbsvalues.parse_subjob_range(text, "pkbs")
    assert (array.format(), found) == (f"5[].{server}", indices)
    assert pbsvalues.is_subjob_range(text)


@pytest.mark.parametrize("text", ["5[3-1]", "5[1-4:0]", "5[-]", "5[2]", "5[]", "x[1-2]"])
def test_parse_subjob_range_refuses(text: str) -> None:
    with pytest.raises(UnknownJob):
        pbsvalues.parse_subjob_range(text, "pkbs")


@pytest.mark.parametrize(
    ("name", "number"),
    [("SIGUSR1", 10), ("USR1", 10), ("9", 9), ("KILL", 9), ("0", 0),
     ("BOGUS", None), ("usr1", None), ("999", None), ("suspend", None)],
)
def test_signal_number(name: str, number: int | None) -> None:
    assert pbsvalues.signal_number(name) == number


def test_array_ranges_are_bounded() -> None:
    """An array's last index fits PBS's int and it has at most MAX_ARRAY_SIZE subjobs,
    checked by qsub and by the server's model (an API client cannot wedge a dispatcher
    with 5e22 subjobs)."""
    import pydantic

    from pkbs.errors import BadAttributeValue
    from pkbs.models import JobSpec
    from pkbs.pbsvalues import MAX_ARRAY_SIZE, parse_array_range

    assert len(parse_array_range(f"1-{MAX_ARRAY_SIZE}").indices()) == MAX_ARRAY_SIZE
    assert len(parse_array_range(f"0-{2 * MAX_ARRAY_SIZE - 2}:2").indices()) == MAX_ARRAY_SIZE
    for text in (f"1-{MAX_ARRAY_SIZE + 1}", "3-49611837076802484332208"):
        with pytest.raises(BadAttributeValue):
            parse_array_range(text)
        with pytest.raises(pydantic.ValidationError):
            JobSpec(name="a", kind="stdin", entrypoint="STDIN", array=text)
