"""scripts/cpu_by_process.py: the CPU time of a command's processes, by kind."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import cpu_by_process as C  # noqa: E402


def test_a_child_that_spins_is_counted_and_the_exit_code_passes_through(tmp_path):
    spin = tmp_path / "spin.py"  # spins 1 s of CPU in a child, then exits 3
    spin.write_text("import subprocess, sys\n"
                    "child = '# spinning child\\nimport time\\nt = time.process_time()\\n"
                    "while time.process_time() - t < 1.0: pass'\n"
                    "subprocess.run([sys.executable, '-c', child], check=True)\n"
                    "sys.exit(3)\n")
    seen, wall, rc = C.run([sys.executable, str(spin)], interval=0.1)
    assert rc == 3 and wall >= 1.0
    (child,) = [e for e in seen.values() if any("spinning child" in n for n in e["names"])]
    assert child["base"] == 0 and child["cpu"] >= 0.9  # started after the first sample
    out = tmp_path / "table.md"  # the command line: the same run, written as a table
    assert C.main(["--out", str(out), "--interval", "0.1", "--", sys.executable, str(spin)]) == 3
    text = out.read_text()
    assert ": exit 3, " in text.splitlines()[0]
    (other,) = [line for line in text.splitlines() if line.startswith("| other |")]
    # the command and its spinning child, at least (the machine's other processes count too);
    # spin.py lies under pytest's temp folder, and is still not taken for a pytest process
    assert int(other.split("|")[2]) >= 2 and float(other.split("|")[3]) >= 0.9


def test_ray_workers_are_told_apart_by_every_name_they_showed():
    worker = "/x/python /x/ray/_private/workers/default_worker.py"
    assert C.kind({worker, "ray::IDLE"}) == "Ray worker that ran no task"
    assert C.kind({worker, "ray::IDLE", "ray::values[direct,none]"}) == "Ray task worker"
    assert C.kind({worker, "ray::LLMWorker.rate"}) == "Ray LLM actor"
    assert C.kind({"/x/python -u /x/ray/dashboard/agent.py", "ray::DashboardAgent"}) == \
        "Ray daemon (dashboard agent)"
    assert C.kind({"/x/python -m pytest -p no:cacheprovider"}) == "pytest process"
    assert C.kind({"/x/python /x/bin/pytest -x"}) == "pytest process"
    assert C.kind({"/x/python /tmp/pytest-of-me/pytest-3/spin.py"}) == "other"
