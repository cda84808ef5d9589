"""What `bench scale` writes: scaling.json (config, machine, commit, every run's measurements),
scaling.csv (one row per worker count and stage, plus the LLM stages together and the total),
table.md and scaling.png."""

from __future__ import annotations

import json
import os
from pathlib import Path

LLM_ROW, TOTAL_ROW = "LLM stages", "total"
GOAL = 0.85  # the LLM-stage efficiency aimed for at 2 workers (issue #11)


def default_out(suite_name: str) -> Path:
    """results/scaling/<suite>-<device>: the GPU's model, else cpu<cores>."""
    import torch

    device = torch.cuda.get_device_name(0).split()[-1].lower() if torch.cuda.is_available() \
        else f"cpu{os.cpu_count()}"
    return Path("results") / "scaling" / f"{suite_name}-{device}"


def pool_workers(run: dict) -> list[dict]:
    """Every worker of every start of every pool in the run."""
    return [w for p in run["pools"] for w in p.get("worker_stats", [])]


def stage_pool_work(run: dict, label: str) -> dict | None:
    """What the pool's workers did for one stage, as the stage counted it (kept through worker
    restarts); None for runs made before stages counted it."""
    return ((run.get("llm") or {}).get(label) or {}).get("pool_work")


def pool_busy(run: dict) -> tuple[float, int]:
    """Seconds the workers computed and prompts they answered, over the run: from the stages'
    own counts where they have them, else from the workers' counters."""
    works = [w for w in ((run.get("llm") or {}).values()) if w.get("pool_work")]
    if works:
        return (sum(w["pool_work"]["busy_seconds"] for w in works),
                sum(w["pool_work"]["prompts"] for w in works))
    workers = pool_workers(run)
    return (sum(w.get("busy_seconds") or 0 for w in workers),
            sum(w.get("prompts") or 0 for w in workers))


def llm_seconds(run: dict) -> float:
    """The wall seconds during which at least one LLM stage ran: the union of their intervals
    (stages that overlap count once); summed for runs that did not record when stages began."""
    spans = [(s.get("started_s"), s["wall_seconds"] or 0) for s in run["stages"].values()
             if s["llm"]]
    if any(start is None for start, _ in spans):
        return sum(wall for _, wall in spans)
    total, end = 0.0, float("-inf")
    for start, wall in sorted(spans):
        total += max(0.0, start + wall - max(start, end))
        end = max(end, start + wall)
    return total


def rows(info: dict) -> list[dict]:
    """scaling.csv: per worker count, every stage, the LLM stages together and the whole run;
    speedup and efficiency against the smallest worker count (efficiency only where workers
    do the work: LLM stages and the total)."""
    runs = info["runs"]
    base = runs[0]
    n0 = base["workers"]
    base_wall = {label: s["wall_seconds"] for label, s in base["stages"].items()}
    base_wall.update({LLM_ROW: llm_seconds(base), TOTAL_ROW: base["process_seconds"]})
    out = []
    for run in runs:
        n = run["workers"]
        workers = pool_workers(run)
        loads = [w["load_seconds"] for w in workers if w.get("load_seconds") is not None]
        busy, answered = pool_busy(run)
        llm_prompts = sum(s["prompts"] or 0 for s in run["stages"].values() if s["llm"])
        stages = [(label, s["wall_seconds"], s["llm"], s["prompts"])
                  for label, s in run["stages"].items() if not s["cached"]]
        stages += [(LLM_ROW, llm_seconds(run), True, llm_prompts),
                   (TOTAL_ROW, run["process_seconds"], False, llm_prompts)]
        for label, wall, llm, prompts in stages:
            b = base_wall.get(label)
            speedup = b / wall if b and wall else None
            eff = speedup * n0 / n if speedup and (llm or label == TOTAL_ROW) else None
            row = {"workers": n, "threads": run["threads"], "stage": label, "llm": llm,
                   "wall_seconds": wall, "speedup": speedup, "efficiency": eff,
                   "prompts": prompts,
                   "prompts_per_s_per_worker": prompts / (n * wall) if llm and prompts and wall
                   else None}
            if label == LLM_ROW:
                row.update(busy_prompts_per_s=answered / busy if busy else None,
                           load_seconds_mean=sum(loads) / len(loads) if loads else None,
                           loads=len(loads))
            out.append(row)
    return out


def _f(x, fmt=".1f") -> str:
    return "–" if x is None else format(x, fmt)


def table(info: dict, data: list[dict]) -> str:
    m, runs = info["machine"], info["runs"]
    engines = sorted({f"{b.get('backend')} {b.get('dtype')} on {b.get('device')}"
                      for r in runs for s in r["llm"].values()
                      if (b := s.get("backend")) and b.get("device")})
    models = sorted({p["model"] for r in runs for p in r["pools"]})
    n0 = runs[0]["workers"]
    lines = [f"# Scaling: {info['suite']['name']} (measured)", "",
             f"Machine: {m.get('cpu')} with {m.get('cpu_count')} cores, CPU capability "
             f"{m.get('cpu_capability')}, native bf16 {m.get('cpu_native_bf16')}"
             + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; torch {m.get('torch')}. "
             f"LLM: {', '.join(Path(x).name for x in models)} ({'; '.join(engines) or '–'}), "
             f"{info['threads']} thread(s) per worker; Ray: {info['address']}, "
             f"{info['ray_cpus']} CPUs. Commit {info['git_commit']}, {info['created_utc']}.",
             "",
             ("Every run is cold: fresh stage and LLM answer caches, nothing shared between runs "
             "(datasets and model files come from the normal cache). Speedup = T(n0) / T(N), "
             f"efficiency = n0 · T(n0) / (N · T(N)) with n0 = {n0} (T1 / (N · TN) when n0 = 1). "
             "LLM stages: their wall times summed. Total: the whole `bench run` process (start, "
             "every stage, reports). Prompts/s per worker: prompts / (N · LLM-stage seconds); "
             "busy: while a worker computes."), "",
             ("| LLM workers | total s | speedup | efficiency | LLM stages s | LLM speedup | "
             "LLM efficiency | prompts | prompts/s per worker | busy prompts/s per worker | "
             "model load s per worker (loads) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["workers"], r["stage"]): r for r in data}
    for run in runs:
        n = run["workers"]
        t, llm = by[(n, TOTAL_ROW)], by[(n, LLM_ROW)]
        lines.append(f"| {n} | {_f(t['wall_seconds'])} | {_f(t['speedup'], '.2f')} | "
                     f"{_f(t['efficiency'], '.2f')} | {_f(llm['wall_seconds'])} | "
                     f"{_f(llm['speedup'], '.2f')} | {_f(llm['efficiency'], '.2f')} | "
                     f"{llm['prompts']} | {_f(llm['prompts_per_s_per_worker'], '.3f')} | "
                     f"{_f(llm['busy_prompts_per_s'], '.3f')} | "
                     f"{_f(llm['load_seconds_mean'])} ({llm['loads']}) |")
    two = by.get((2, LLM_ROW))
    if two and two["efficiency"] is not None and n0 == 1:
        met = "met" if two["efficiency"] >= GOAL else "NOT met"
        lines += ["", (f"LLM-stage efficiency at 2 workers: **{two['efficiency']:.2f}** "
                       f"(goal ≥ {GOAL}: {met}).")]
    counts = [r["workers"] for r in runs]
    lines += ["", "## Wall seconds per stage", "",
              "| stage | LLM | " + " | ".join(f"{n} worker(s)" for n in counts) +
              f" | speedup at {counts[-1]} |",
              "|---|---|" + "---|" * len(counts) + "---|"]
    for label in [r["stage"] for r in data if r["workers"] == n0]:
        cells = [_f(by[(n, label)]["wall_seconds"], ".2f") if (n, label) in by else "–"
                 for n in counts]
        last = by.get((counts[-1], label))
        lines.append(f"| {label} | {'yes' if by[(n0, label)]['llm'] else ''} | "
                     + " | ".join(cells) + f" | {_f(last and last['speedup'], '.2f')} |")
    return "\n".join(lines) + "\n"


def plot(info: dict, data: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [r["workers"] for r in info["runs"]]
    by = {(r["workers"], r["stage"]): r for r in data}
    llm = [by[(n, LLM_ROW)]["wall_seconds"] for n in counts]
    rest = [by[(n, TOTAL_ROW)]["wall_seconds"] - x for n, x in zip(counts, llm)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = range(len(counts))
    left.bar(x, llm, label="LLM stages")
    left.bar(x, rest, bottom=llm, label="everything else (serial stages, start, reports)")
    left.set(xticks=list(x), xticklabels=[str(n) for n in counts], xlabel="LLM workers",
             ylabel="wall seconds", title="Cold run, wall time")
    left.legend(fontsize=8)
    ideal = [n / counts[0] for n in counts]
    right.plot(counts, ideal, ":", color="grey", label="ideal")
    for row, style in ((LLM_ROW, "o-"), (TOTAL_ROW, "s--")):
        sp = [by[(n, row)]["speedup"] for n in counts]
        right.plot(counts, sp, style, label=row)
        for n, s in zip(counts, sp):
            eff = by[(n, row)]["efficiency"]
            right.annotate(f"eff {eff:.2f}", (n, s), textcoords="offset points", xytext=(4, -12),
                           fontsize=7)
    right.set(xlabel="LLM workers", ylabel="speedup", xticks=counts,
              title=f"Speedup against {counts[0]} worker(s)")
    right.legend(fontsize=8)
    fig.suptitle(f"{info['suite']['name']}: scaling of a cold run (measured)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(info: dict, out: Path) -> str:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    data = rows(info)
    (out / "scaling.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    pd.DataFrame(data).to_csv(out / "scaling.csv", index=False)
    text = table(info, data)
    (out / "table.md").write_text(text)
    plot(info, data, out / "scaling.png")
    return text
