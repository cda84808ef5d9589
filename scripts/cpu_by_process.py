"""Where a command's CPU time goes, by kind of process.

    python scripts/cpu_by_process.py [--out table.md] -- .venv/bin/python -m pytest

runs the command and, twice a second while it runs, reads every process's CPU time (psutil);
at the end it writes a markdown table: CPU seconds per kind of process (the test or bench
processes, Ray's task workers, LLM actors, idle workers and daemons, vLLM's engine processes),
with the command's wall time and the machine's cores. Ray renames its workers (ray::IDLE,
ray::<task>), so a process's kind comes from every name it showed. A process that lives less
than half a second may be missed, and CPU time is read from the whole machine: run it on an
otherwise idle one. It shows where time goes, not why."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

import psutil

# (text in one of the process's names, kind); the first match wins
KINDS = [("ray::LLMWorker", "Ray LLM actor"), ("raylet", "Ray daemon (raylet)"),
         ("gcs_server", "Ray daemon (gcs)"), ("dashboard/agent.py", "Ray daemon (dashboard agent)"),
         ("runtime_env/agent", "Ray daemon (runtime_env agent)"),
         ("log_monitor", "Ray daemon (log_monitor)"),
         ("dashboard/dashboard.py", "Ray daemon (dashboard)"),
         ("autoscaler/_private/monitor.py", "Ray daemon (monitor)"),
         ("VLLM::", "vLLM engine process"),
         ("vllm.entrypoints", "vLLM server"), ("bench.cli", "bench command (subprocess)"),
         # pytest's own command lines, not any path that holds "pytest" (its temp folders do)
         ("-m pytest", "pytest process"), ("bin/pytest", "pytest process"),
         ("exec(eval(sys.stdin.readline()))", "pytest process")]  # xdist's workers (execnet)


def kind(names: set[str]) -> str:
    joined = " | ".join(sorted(names))
    for text, k in KINDS:
        if text in joined:
            return k
    if any(n.startswith("ray::") and n != "ray::IDLE" for n in names):
        return "Ray task worker"
    if "ray::IDLE" in joined or "default_worker.py" in joined:
        return "Ray worker that ran no task"
    return "other"


def sample(seen: dict, first: bool) -> None:
    """Add every live process's CPU time (user + system) and name to `seen`, keyed by pid and
    start time; a process already running at the first sample counts from then on."""
    for proc in psutil.process_iter(["create_time", "cmdline", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is None:  # gone, or not ours to read
            continue
        used = info["cpu_times"].user + info["cpu_times"].system
        entry = seen.setdefault((proc.pid, info["create_time"]),
                                {"base": used if first else 0.0, "cpu": 0.0, "names": set()})
        entry["cpu"] = max(entry["cpu"], used)
        name = " ".join(info["cmdline"] or []).strip()
        if name:  # an exiting process shows none
            entry["names"].add(name.split(" --")[0][:120])


def run(command: list[str], interval: float = 0.5) -> tuple[dict, float, int]:
    """Run `command`, sampling all processes every `interval` s: (what was seen, wall seconds,
    exit code)."""
    seen: dict = {}
    sample(seen, first=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        time.sleep(interval)
        sample(seen, first=False)
    return seen, time.monotonic() - t0, proc.returncode


def table(seen: dict, wall: float, rc: int, command: list[str]) -> str:
    totals: dict[str, list] = {}
    for entry in seen.values():
        used = entry["cpu"] - entry["base"]
        if used > 0:
            row = totals.setdefault(kind(entry["names"]), [0, 0.0])
            row[0] += 1
            row[1] += used
    cpu = sum(s for _, s in totals.values())
    cores = len(psutil.Process().cpu_affinity())
    shown = shlex.join(command).replace("\n", "\\n")  # one line, whatever the command holds
    lines = [f"`{shown}`: exit {rc}, {wall:.0f} s wall on {cores} cores "
             f"({cores * wall:.0f} CPU-seconds available), {cpu:.0f} CPU-seconds used "
             f"({cpu / max(cores * wall, 1e-9):.0%})", "",
             "| kind of process | processes | CPU seconds | share |", "|---|---|---|---|"]
    for k, (n, s) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {k} | {n} | {s:.1f} | {s / cpu:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the table here")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    seen, wall, rc = run(command, args.interval)
    text = table(seen, wall, rc, command)
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
