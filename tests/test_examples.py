"""The examples in examples/ run as their READMEs say."""

from __future__ import annotations

from pathlib import Path

from tests.stackutil import Stack

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_dependency_chain_runs_in_order(stack: Stack, tmp_path: Path) -> None:
    result = stack.run("bash", str(EXAMPLES / "chain" / "submit-chain.sh"))
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 3
    finals = [stack.wait_state(job_id, "F", timeout=60) for job_id in ids]
    assert [f["Exit_status"] for f in finals] == [0, 0, 0]
    assert finals[1]["depend"] == f"afterok:{ids[0]}"
    # Each step started only after the one before it had ended.
    starts = [stack.qstat_json(i)["Jobs"][i]["stime"] for i in ids]
    ends = [stack.qstat_json(i)["Jobs"][i]["obittime"] for i in ids]
    assert starts == sorted(starts) and ends == sorted(ends)
    out = tmp_path / "report"
    fetched = stack.run(str(Path(stack.env["PATH"].split(":")[0]) / "pkbs"), "fetch", ids[2],
                        str(out))
    assert fetched.returncode == 0, fetched.stderr
    (report,) = out.glob("report.o*")
    assert report.read_text().startswith(f"step 3 ran as {ids[2]} ")
