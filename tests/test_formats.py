"""Golden tests for qstat's output formats (pkbs.cli.formats).

Expected texts are written out literally from OpenPBS src/cmds/qstat.c (printf
formats, prt_attr's folding, altdsp_statjob) and cJSON's cJSON_Print; they are not
copied from our own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pkbs.cli import cjson
from pkbs.cli import formats as f

NOV11 = 1478887025  # Fri Nov 11 17:57:05 2016 UTC
NOV01 = 1477958400  # Tue Nov  1 00:00:00 2016 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def job(**attrs: object) -> dict[str, object]:
    base: dict[str, object] = {
        "Job_Name": "STDIN",
        "Job_Owner": "alice@login1",
        "job_state": "R",
        "queue": "workq",
    }
    base.update(attrs)
    return base


# ---------------------------------------------------------------------------
# default table


def test_default_table_row_and_header() -> None:
    jobs = [("12.pkbs", job(**{"resources_used.cput": "00:00:12"}))]
    assert f.default_table(jobs) == (
        "Job id            Name             User              Time Use S Queue\n"
        "----------------  ---------------- ----------------  -------- - -----\n"
        "12.pkbs           STDIN            alice             00:00:12 R workq           \n"
    )


def test_default_table_empty_prints_nothing() -> None:
    assert f.default_table([]) == ""
    assert f.default_table([], comment="hello") == ""


def test_default_table_truncation() -> None:
    jobs = [
        (
            "123456789012345678.pkbs.example.com",
            job(
                Job_Name="abcdefghijklmnop",  # exactly 16: cut too (l >= NAMEL)
                Job_Owner="averyveryverylong@host",  # 17 > 16
                queue="qqqqqqqqqqqqqqqqq@server",  # 17 after the @ cut
                **{"resources_used.cput": "100:00:00"},
            ),
        ),
        (
            "7.svr.example.com",
            job(Job_Name="abcdefghijklmno", Job_Owner="sixteencharsuser@h", queue="q@s"),
        ),
    ]
    assert f.default_table(jobs) == (
        "Job id            Name             User              Time Use S Queue\n"
        "----------------  ---------------- ----------------  -------- - -----\n"
        "1234567890123456* abcdefghijklmno* averyveryverylo*  100:00:* R qqqqqqqqqqqqqqq*\n"
        "7.svr             abcdefghijklmno  sixteencharsuser         0 R q               \n"
    )


def test_default_table_comment_and_wide() -> None:
    jobs = [("12.pkbs", job(Job_Name="a-rather-long-name"))]
    assert f.default_table(jobs, wide=True, comment="maintenance at 5") == (
        "maintenance at 5\n"
        "Job id                         Name            User             Time Use S Queue\n"
        "-----------------------------  --------------- ---------------  -------- - "
        "---------------\n"
        "12.pkbs                        a-rather-long-* alice                   0 R "
        "workq          \n"
    )


def test_default_table_long_ids() -> None:
    jobs = [("12345678.pkbs", job())]
    assert f.default_table(jobs, long_ids=True) == (
        "Job id                 Name             User              Time Use S Queue\n"
        "---------------------  ---------------- ----------------  -------- - -----\n"
        "12345678.pkbs          STDIN            alice                    0 R workq           \n"
    )


# ---------------------------------------------------------------------------
# qstat -f


def test_full_basic_times_and_variable_list() -> None:
    attrs = {
        "Job_Name": "STDIN",
        "resources_used.cput": "00:00:01",
        "job_state": "F",
        "ctime": NOV11,
        "mtime": NOV01,
        "Resource_List.ncpus": "1",
        "Variable_List": {"PBS_O_HOME": "/home/u", "X": "a,b"},
        "Exit_status": 0,
        "comment": None,  # unset: not printed
    }
    assert f.full([("12.pkbs", attrs)]) == (
        "Job Id: 12.pkbs\n"
        "    Job_Name = STDIN\n"
        "    resources_used.cput = 00:00:01\n"
        "    job_state = F\n"
        "    ctime = Fri Nov 11 17:57:05 2016\n"
        "    mtime = Tue Nov  1 00:00:00 2016\n"
        "    Resource_List.ncpus = 1\n"
        "    Variable_List = PBS_O_HOME=/home/u,X=a\\,b\n"
        "    Exit_status = 0\n"
        "\n"
    )


def test_full_two_jobs_and_empty() -> None:
    assert f.full([]) == ""
    jobs = [("1.pkbs", {"job_state": "Q"}), ("2.pkbs", {"job_state": "R"})]
    assert f.full(jobs) == (
        "Job Id: 1.pkbs\n    job_state = Q\n\nJob Id: 2.pkbs\n    job_state = R\n\n"
    )


def test_full_folding_at_78() -> None:
    # "    x = " is 8 columns (start = strlen(name) + 7 = 8).
    value = ",".join(["a" * 60, "b" * 9, "c" * 5, "d" * 100])
    assert f.full([("1.pkbs", {"x": value})]) == (
        "Job Id: 1.pkbs\n"
        "    x = " + "a" * 60 + "," + "b" * 9 + ",\n"
        "\t" + "c" * 5 + ",\n"
        "\t" + "d" * 70 + "\n"
        "\t" + "d" * 30 + "\n"
        "\n"
    )


def test_full_overlong_first_token_and_boundaries() -> None:
    # A first token is never preceded by a break; it is cut after column 78.
    assert f.attribute_line("x", None, "e" * 80) == "    x = " + "e" * 71 + "\n\t" + "e" * 9
    # 8 + 70 = 78 is not < 78, so the token goes char by char, but never passes 78.
    assert f.attribute_line("x", None, "f" * 70) == "    x = " + "f" * 70
    # 8 + 69 = 77 < 78 fits as a whole.
    assert f.attribute_line("x", None, "g" * 69 + ",h") == "    x = " + "g" * 69 + ",\n\th"
    # strtok: empty tokens vanish.
    assert f.attribute_line("x", None, "a,,b,") == "    x = a,b"
    # resources count "name.resource" in the start column.
    assert f.attribute_line("Resource_List", "select", "1:ncpus=1") == (
        "    Resource_List.select = 1:ncpus=1"
    )


def test_full_wide_no_folding_and_escaped_newline() -> None:
    value = ",".join(["a" * 60, "b" * 30])
    assert f.full([("1.pkbs", {"x": value, "comment": "two\nlines"})], wide=True) == (
        "Job Id: 1.pkbs\n    x = " + "a" * 60 + "," + "b" * 30 + "\n    comment = two\\nlines\n\n"
    )


def test_full_nonprinting_characters() -> None:
    assert f.attribute_line("comment", None, "bell\x07") == "    comment = bell^G"


def test_estimated_start_time_zero_is_unknown() -> None:
    out = f.full([("1.pkbs", {"estimated.start_time": 0})])
    assert out == "Job Id: 1.pkbs\n    estimated.start_time = UNKNOWN\n\n"


# ---------------------------------------------------------------------------
# -F json


def test_json_no_jobs_has_no_jobs_key() -> None:
    assert f.json_full([], "pkbs", 1700000000, "0.1.0") == (
        '{\n\t"timestamp":\t1700000000,\n\t"pbs_version":\t"0.1.0",\n\t"pbs_server":\t"pkbs"\n}\n'
    )


def test_json_typing_and_nesting() -> None:
    attrs = {
        "Job_Name": "123",
        "Job_Owner": "alice@login1",
        "resources_used.cput": "00:00:00",
        "resources_used.ncpus": "2",
        "job_state": "F",
        "Account_Name": "42",
        "ctime": NOV11,
        "Priority": 0,
        "Rerunable": "True",
        "Resource_List.ncpus": "4",
        "Resource_List.walltime": "01:00:00",
        "session_id": 1234,
        "Variable_List": {"PBS_O_HOME": "/home/u", "N": "5", "L": "a,b"},
        "comment": "1e3",
        "Exit_status": -29,
        "project": "7",
        "ratio": "1.5",
        "flag": "true",
    }
    assert f.json_full([("12.pkbs", attrs)], "pkbs", 1478887030, "0.1.0") == (
        "{\n"
        '\t"timestamp":\t1478887030,\n'
        '\t"pbs_version":\t"0.1.0",\n'
        '\t"pbs_server":\t"pkbs",\n'
        '\t"Jobs":\t{\n'
        '\t\t"12.pkbs":\t{\n'
        '\t\t\t"Job_Name":\t"123",\n'
        '\t\t\t"Job_Owner":\t"alice@login1",\n'
        '\t\t\t"resources_used":\t{\n'
        '\t\t\t\t"cput":\t"00:00:00",\n'
        '\t\t\t\t"ncpus":\t2\n'
        "\t\t\t},\n"
        '\t\t\t"job_state":\t"F",\n'
        '\t\t\t"Account_Name":\t"42",\n'
        '\t\t\t"ctime":\t"Fri Nov 11 17:57:05 2016",\n'
        '\t\t\t"Priority":\t0,\n'
        '\t\t\t"Rerunable":\t"True",\n'
        '\t\t\t"Resource_List":\t{\n'
        '\t\t\t\t"ncpus":\t4,\n'
        '\t\t\t\t"walltime":\t"01:00:00"\n'
        "\t\t\t},\n"
        '\t\t\t"session_id":\t1234,\n'
        '\t\t\t"Variable_List":\t{\n'
        '\t\t\t\t"PBS_O_HOME":\t"/home/u",\n'
        '\t\t\t\t"N":\t5,\n'
        '\t\t\t\t"L":\t"a,b"\n'
        "\t\t\t},\n"
        '\t\t\t"comment":\t1000,\n'
        '\t\t\t"Exit_status":\t-29,\n'
        '\t\t\t"project":\t"7",\n'
        '\t\t\t"ratio":\t1.5,\n'
        '\t\t\t"flag":\ttrue\n'
        "\t\t}\n"
        "\t}\n"
        "}\n"
    )


def test_json_output_is_valid_json_for_clients() -> None:
    attrs = {"job_state": "R", "stime": NOV11, "Resource_List.walltime": "00:30:00"}
    out = f.json_full([("3.pkbs", attrs)], "pkbs", 1, "0.1.0")
    data = json.loads(out)
    job_data = data["Jobs"]["3.pkbs"]
    assert job_data["job_state"] == "R"
    # HyperQueue parses stime with "%a %b %d %H:%M:%S %Y".
    assert time.strptime(job_data["stime"], "%a %b %d %H:%M:%S %Y").tm_mday == 11
    assert job_data["Resource_List"]["walltime"] == "00:30:00"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("007", 7.0),  # cJSON accepts leading zeros
        ("1.", 1.0),
        ("-.5", -0.5),
        ("1e5", 100000.0),
        (" 5 ", 5.0),
        ("+5", "+5"),  # a number must start with '-' or a digit
        (".5", ".5"),
        ("1e", "1e"),
        ("01:00:00", "01:00:00"),
        ("1:ncpus=1", "1:ncpus=1"),
        ("True", "True"),
        ("true", True),
        ("null", None),
        ("nullx", "nullx"),
        ('"quoted"', "quoted"),
        ("", ""),
        ("NaN", "NaN"),
        ("[1, 2]", [1.0, 2.0]),
    ],
)
def test_cjson_parse(text: str, expected: object) -> None:
    assert cjson.parse(text) == expected


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (1e20, "1e+20"),
        (0.1, "0.1"),
        (3000000000.0, "3000000000"),
        (-0.5, "-0.5"),
        (-29.0, "-29"),
        (float("inf"), "null"),
    ],
)
def test_cjson_number_printing(value: float, printed: str) -> None:
    assert cjson.dumps(value) == printed


def test_cjson_print_strings_arrays_and_empty_object() -> None:
    assert cjson.dumps('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\u0001é"'
    assert cjson.dumps([1.0, "x", [True, None]]) == '[1, "x", [true, null]]'
    assert cjson.dumps(cjson.JObject()) == "{\n}"
    assert cjson.dumps(cjson.JObject([("a", cjson.JObject())])) == '{\n\t"a":\t{\n\t}\n}'


def test_json_queue_and_server_documents() -> None:
    out = f.json_server("pkbs", {"server_state": "Active", "total_jobs": 3}, "pkbs", 5, "v")
    assert out == (
        "{\n"
        '\t"timestamp":\t5,\n'
        '\t"pbs_version":\t"v",\n'
        '\t"pbs_server":\t"pkbs",\n'
        '\t"Server":\t{\n'
        '\t\t"pkbs":\t{\n'
        '\t\t\t"server_state":\t"Active",\n'
        '\t\t\t"total_jobs":\t3\n'
        "\t\t}\n"
        "\t}\n"
        "}\n"
    )
    assert '"Queue":\t{' in f.json_queues([("workq", {"enabled": "True"})], "pkbs", 5, "v")
    assert '"Queue"' not in f.json_queues([], "pkbs", 5, "v")


# ---------------------------------------------------------------------------
# -F dsv


def test_dsv_full() -> None:
    attrs = {
        "Job_Name": "a|b",
        "Resource_List.ncpus": "1",
        "ctime": NOV11,
        "Variable_List": {"A": "1", "B": "x,y"},
        "comment": "back\\slash\nnewline",
    }
    assert f.dsv_full([("1.pkbs", attrs), ("2.pkbs", {"job_state": "Q"})]) == (
        "Job Id: 1.pkbs|Job_Name=a\\|b|Resource_List.ncpus=1|ctime=Fri Nov 11 17:57:05 2016"
        "|Variable_List=A=1,B=x\\,y|comment=back\\\\slash\\nnewline\n"
        "Job Id: 2.pkbs|job_state=Q\n"
    )


def test_dsv_custom_delimiter() -> None:
    attrs = {"Variable_List": {"A": "1", "B": "2"}, "job_state": "R"}
    assert f.dsv_full([("1.pkbs", attrs)], delimiter=",") == (
        "Job Id: 1.pkbs,Variable_List=A=1\\,B=2,job_state=R\n"
    )
    assert f.dsv_full([("1.pkbs", {"x": "a::b"})], delimiter="::") == ("Job Id: 1.pkbs::x=a\\::b\n")
    assert f.dsv_full([]) == ""


# ---------------------------------------------------------------------------
# alternate (-a -n -s -1)

ALT_HEADER = (
    "\n"
    "pkbs: \n"
    "                                                            Req'd  Req'd   Elap\n"
    "Job ID          Username Queue    Jobname    SessID NDS TSK Memory Time  S Time\n"
    "--------------- -------- -------- ---------- ------ --- --- ------ ----- - -----\n"
)


def running_job() -> dict[str, object]:
    return job(
        session_id=4242,
        exec_host="node1.example.com/0*4+node2.example.com/0*4",
        **{
            "Resource_List.mem": "2gb",
            "Resource_List.ncpus": "8",
            "Resource_List.nodect": "2",
            "Resource_List.walltime": "01:00:00",
            "resources_used.walltime": "00:01:00",
        },
    )


def test_alternate_row_and_missing_values() -> None:
    jobs = [
        ("12.pkbs", running_job()),
        ("13.pkbs", {"Job_Name": "pending", "Job_Owner": "bob@h", "job_state": "Q"}),
    ]
    assert f.alternate(jobs, "pkbs") == ALT_HEADER + (
        "12.pkbs         alice    workq    STDIN        4242   2   8    2gb 01:00 R 00:01\n"
        "13.pkbs         bob       --      pending       --   --  --    --    --  Q   -- \n"
    )


def test_alternate_empty_and_comment() -> None:
    assert f.alternate([], "pkbs", "up") == ""
    out = f.alternate([("1.pkbs", job())], "pkbs", "Scheduling is on")
    assert out.startswith("\npkbs: Scheduling is on\n" + " " * 60 + "Req'd  Req'd   Elap\n")


def test_alternate_truncation_and_cput() -> None:
    attrs = job(
        Job_Name="averylongjobname",
        Job_Owner="longusername@h",
        queue="longqueuename",
        session_id=12345678,
        **{
            "Resource_List.cput": "10:00:00",
            "resources_used.cput": "00:20:00",
            "Resource_List.walltime": "99:00:00",
            "Resource_List.ncpus": "1000",
        },
    )
    assert f.alternate([("1234567890123456.pkbs", attrs)], "pkbs") == ALT_HEADER + (
        "12345678901234* longuse* longque* averylong* 12345*  -- 10*    --  10:00 R 00:20\n"
    )


def test_alternate_nodes_and_comment() -> None:
    attrs = running_job()
    attrs["comment"] = "Job run at Fri Nov 11 at 17:57 on (node1:ncpus=4)+(node2:ncpus=4) and more."
    out = f.alternate([("12.pkbs", attrs)], "pkbs", show_nodes=True, show_comment=True)
    assert out == ALT_HEADER + (
        "12.pkbs         alice    workq    STDIN        4242   2   8    2gb 01:00 R 00:01\n"
        "   node1/0*4+node2/0*4\n"
        "   Job run at Fri Nov 11 at 17:57 on (node1:ncpus=4)+(node2:ncpus=4) and ...\n"
    )


def test_alternate_missing_nodes_and_comment_print_dashes() -> None:
    out = f.alternate([("1.pkbs", job())], "pkbs", show_nodes=True, show_comment=True)
    assert out.endswith("R   -- \n    -- \n    -- \n")


def test_alternate_one_line() -> None:
    out = f.alternate([("12.pkbs", running_job())], "pkbs", show_nodes=True, one_line=True)
    assert out == ALT_HEADER + (
        "12.pkbs         alice    workq    STDIN        4242   2   8    2gb 01:00 R 00:01 "
        "node1/0*4+node2/0*4\n"
    )
    with pytest.raises(ValueError):
        f.alternate([("12.pkbs", running_job())], "pkbs", one_line=True)


def test_nodes_wrap_before_column_77() -> None:
    hosts = "+".join(f"node{i:02d}.cluster/0*16" for i in range(1, 11))
    assert f.nodes_text(hosts) == (
        "   node01/0*16+node02/0*16+node03/0*16+node04/0*16+node05/0*16+node06/0*16+\n"
        "   node07/0*16+node08/0*16+node09/0*16+node10/0*16\n"
    )
    assert f.nodes_text("10.0.0.5/0") == "   10.0.0.5/0\n"  # IP addresses keep their dots


def test_alternate_wide_header() -> None:
    out = f.alternate([("1.pkbs", job())], "pkbs", wide=True)
    assert out == (
        "\npkbs: \n" + " " * 99 + "Req'd  Req'd   Elap\n"
        "Job ID                         Username        Queue           Jobname         "
        "SessID   NDS  TSK   Memory Time  S Time\n"
        "------------------------------ --------------- --------------- --------------- "
        "-------- ---- ----- ------ ----- - -----\n"
        "1.pkbs                         alice           workq           STDIN           "
        "     --   --    --     --    --  R   -- \n"
    )


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        ("2gb", None, "2gb"),
        ("10000mb", None, "10gb"),
        ("512", None, "512 b"),
        ("1048576kb", None, "1024mb"),
        ("1kw", None, "1kw"),
        ("2gb", "mw", "256mw"),
        ("1048576kb", "gb", "1gb"),
    ],
)
def test_cnv_size(value: str, unit: str | None, shown: str) -> None:
    assert f.cnv_size(value, unit) == shown


# ---------------------------------------------------------------------------
# queues and servers

STATE_COUNT = "Transit:0 Queued:1 Held:0 Waiting:0 Running:1 Exiting:0 Begun:0 "


def test_queue_table() -> None:
    queues = [
        (
            "workq",
            {
                "queue_type": "Execution",
                "total_jobs": 2,
                "state_count": STATE_COUNT,
                "enabled": "True",
                "started": "True",
            },
        ),
        ("averyveryverylongqueue", {"enabled": "False", "state_count": "Queued:123456 "}),
    ]
    assert f.queue_table(queues) == (
        "Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type\n"
        "---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----\n"
        "workq                0     2 yes yes     1     1     0     0     0     0 Exe*\n"
        "averyveryverylo*     0     0  no  no 1234*     0     0     0     0     0 not defined\n"
    )
    assert f.queue_table([]) == ""


def test_queue_summary() -> None:
    queues = [
        (
            "workq",
            {
                "state_count": "Transit:0 Queued:3 Held:1 Waiting:1 Running:2 Exiting:0 Begun:0 ",
                "enabled": "True",
                "started": "True",
                "resources_max.walltime": "24:00:00",
            },
        ),
        ("batch", {"state_count": STATE_COUNT, "max_running": 4, "resources_max.mem": "4gb"}),
    ]
    assert f.queue_summary("pkbs", queues) == (
        "\nserver: pkbs\n\n"
        "Queue            Memory CPU Time Walltime Node   Run   Que   Lm  State\n"
        "---------------- ------ -------- -------- ---- ----- ----- ----  -----\n"
        "workq              --      --    24:00:00  --      2     5   --   E R\n"
        "batch               4gb    --       --     --      1     1    4   D S\n"
        "                                               ----- -----\n"
        "                                                   3     6\n"
    )


def test_server_table_and_full() -> None:
    attrs = {
        "server_state": "Active",
        "server_host": "pkbs",
        "total_jobs": 2,
        "state_count": STATE_COUNT,
        "resources_default.ncpus": "1",
    }
    assert f.server_table([("pkbs", attrs)]) == (
        "Server             Max   Tot   Que   Run   Hld   Wat   Trn   Ext Status\n"
        "---------------- ----- ----- ----- ----- ----- ----- ----- ----- -----------\n"
        "pkbs                 0     2     1     1     0     0     0     0 Active    \n"
    )
    assert f.server_full("pkbs", attrs) == (
        "Server: pkbs\n"
        "    server_state = Active\n"
        "    server_host = pkbs\n"
        "    total_jobs = 2\n"
        # One 65-character token: broken after column 78, as real qstat -Bf shows it.
        "    state_count = Transit:0 Queued:1 Held:0 Waiting:0 Running:1 Exiting:0 Begun\n"
        "\t:0 \n"
        "    resources_default.ncpus = 1\n"
        "\n"
    )
    assert f.server_full("pkbs", {}) == "Server: pkbs\n\n"


def test_queue_full_and_dsv() -> None:
    queues = [("workq", {"queue_type": "Execution", "enabled": "True"})]
    assert f.queue_full(queues) == (
        "Queue: workq\n    queue_type = Execution\n    enabled = True\n\n"
    )
    assert f.dsv_queues(queues) == "Queue: workq|queue_type=Execution|enabled=True\n"
    assert f.dsv_server("pkbs", {"server_state": "Active"}) == "Server: pkbs|server_state=Active\n"


# ---------------------------------------------------------------------------
# wire and imports


def test_jobs_from_wire() -> None:
    payload = {"server": "pkbs", "timestamp": 1, "jobs": [{"id": "1.pkbs", "attributes": {}}]}
    assert f.jobs_from_wire(payload) == [("1.pkbs", {})]
    assert f.jobs_from_wire({"jobs": []}) == []


def test_nested_resource_mappings_are_flattened() -> None:
    attrs = {"Resource_List": {"ncpus": "2", "walltime": "00:10:00"}}
    assert f.full([("1.pkbs", attrs)]) == (
        "Job Id: 1.pkbs\n    Resource_List.ncpus = 2\n    Resource_List.walltime = 00:10:00\n\n"
    )


def test_formats_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import pkbs.cli.formats; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'httpx', 'nats', 'click') or m in ('pkbs.models', 'pkbs.pbsattrs')]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
