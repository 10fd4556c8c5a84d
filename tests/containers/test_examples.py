"""The examples, run on the system of containers and fetched from the host."""

from __future__ import annotations

from pathlib import Path

from tests.containers.system import System
from tests.stackutil import BIN

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_run_in_containers(system: System, tmp_path: Path) -> None:
    system.up(workers=2)
    hello = system.qsub("-N", "hello-world", str(EXAMPLES / "hello-world"))
    calc = system.qsub("-N", "calc", str(EXAMPLES / "calculation" / "calc.sh"))
    counter = system.qsub("-v", "COUNT=0,LIMIT=4", str(EXAMPLES / "counter" / "counter.sh"))
    chain = system.run("bash", str(EXAMPLES / "chain" / "submit-chain.sh"))
    assert chain.returncode == 0, chain.stderr
    for job_id in [hello, calc, counter, *chain.stdout.split()]:
        final = system.wait_state(job_id, "F", timeout=90)
        assert final["Exit_status"] == 0, final
    out = tmp_path / "hello"
    fetched = system.run(str(BIN / "pkbs"), "fetch", hello, str(out))
    assert fetched.returncode == 0, fetched.stderr
    (output,) = out.glob("hello-world.o*")
    assert "Hello" in output.read_text() or output.read_text().strip(), output.read_text()
