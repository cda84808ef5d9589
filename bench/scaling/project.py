"""`bench project`: the wall time of a suite on 1 … N GPUs, projected (never measured) from

- the measured scaling run on this machine (bench scale): every CPU stage (BiVAE, pool, …),
  start-up and reports, each LLM stage's fixed coordination and how fast a model loads;
- the answer cache's own work per prompt and per shard, measured when the projection runs;
- the committed GPU throughput run (bench throughput): the cost model of rating prompts
  (fixed + per request + per prompt, per shard), the encoder's, and the GPU's memory bandwidth,
  which bounds a decode step (generation: weights read once per new token);
- a full-scale sweep (results/genre_untrained/reference by default);
- the projected suite's plan and dataset (users, candidate items, prompts per stage) and the
  stated assumptions (bench/scaling/inputs.py).

bench/scaling/model.py turns the steps into a wall time per GPU count."""

from __future__ import annotations

import math
from pathlib import Path

from .inputs import shards
from .model import INF, Work, critical_path, project, serial_fraction, wall_seconds


def item_tokens(suite, tp: dict, assume) -> float:
    """Tokens of one item's text in a prompt: as measured, plus its LLM profile if it has one."""
    return tp["suffix_tokens"] + (assume.summary_fill * suite.data.items.summary_tokens
                                  if suite.data.items.text == "summary" else 0)


class Projector:
    def __init__(self, suite, facts: dict, ms: dict, tp: dict, sweep_unit: float, assume,
                 cache: dict):
        self.suite, self.facts, self.ms, self.tp = suite, facts, ms, tp
        self.sweep_unit, self.a, self.cache = sweep_unit, assume, cache
        self.loaded: set[str] = set()
        self.notes: dict[str, str] = {}
        self.item_tokens = item_tokens(suite, tp, assume)

    def load_rate(self) -> float | None:
        """Bytes of weights loaded per second: as assumed, else as measured here."""
        return self.a.load_gb_per_s * 1e9 if self.a.load_gb_per_s else self.ms["load_bytes_per_s"]

    # --- LLM steps: a fixed part (load, coordination) plus shards of work -------------------
    def _fixed(self, step, prompts: float, n_shards: int) -> float:
        from ..llmpool import pool_key

        own = self.cache["per_prompt_s"] * prompts + self.cache["per_shard_s"] * n_shards
        fixed = self.ms["stage_fixed_s"] + own
        key = pool_key(step.llm)
        if key not in self.loaded:  # a pool loads its model once, all workers at the same time
            self.loaded.add(key)
            rate = self.load_rate()
            if rate:
                fixed += self.a.params(step.llm["key"]["model"]) * self.a.bytes_per_param / rate
        return fixed

    def rate(self, step, deps, prompts: float, requests: float, tokens: float,
             prefix_scale: float = 1.0) -> Work:
        """Rating prompts: the throughput cost model per shard, scaled to the model's size, the
        prompt's tokens and tensor-parallel GPUs."""
        llm = step.llm["key"]
        t = self.tp["rate"]
        n = shards(prompts, llm["shard_size"])
        size = self.a.params(llm["model"]) / self.tp["rate_params"] / llm.get(
            "tensor_parallel_size", 1)
        prefixes = (requests + n - 1) / n  # a shard holds one request's prompts, or two
        shard_s = t["fixed_s"] + size * (t["per_request_s"] * prefixes * prefix_scale
                                         + t["per_prompt_s"] * tokens / self.tp["suffix_tokens"]
                                         * prompts / n)
        return Work(step.label, deps, self._fixed(step, prompts, n), n, shard_s, 1,
                    step.llm["gpus"] or 1)

    def generate(self, step, deps, prompts: float, new_tokens: int, rounds: int = 1) -> Work:
        """Generation: every new token reads the weights once (the bandwidth floor), per batch."""
        llm = step.llm["key"]
        per_round = math.ceil(prompts / rounds)
        n = shards(per_round, llm["shard_size"])
        token_s = self.a.params(llm["model"]) * self.a.bytes_per_param / (
            self.tp["bandwidth"] * llm.get("tensor_parallel_size", 1))
        batches = math.ceil(min(llm["shard_size"], per_round) / llm["batch_size"])
        return Work(step.label, deps, self._fixed(step, prompts, n * rounds), n,
                    batches * new_tokens * token_s, rounds, step.llm["gpus"] or 1)

    def llm_step(self, step, by_label: dict, deps) -> Work:
        f, cfg, users = self.facts, step.config, self.facts["users"]
        if step.stage == "dataset":
            w = self.generate(step, deps, f["items"], self.suite.data.items.summary_tokens)
            return Work(w.label, deps, w.fixed_s + self.cpu_seconds(step), w.shards, w.shard_s,
                        w.rounds, w.gpus_per_worker)
        if step.stage == "requests":
            self.notes[step.label] = "one try per user (retries not counted)"
            return self.generate(step, deps, users, self.a.request_tokens)
        if step.stage == "values":
            ctx = cfg.get("context", "none")
            lines = int(ctx.split(":")[1]) if ctx.startswith("history:") else 0
            scale = 1 + lines * self.a.history_line_tokens / self.tp["prefix_tokens"]
            return self.rate(step, deps, users * f["candidates"], users, self.item_tokens, scale)
        if step.stage == "train_requests":
            rounds = math.ceil(cfg["batches"] / cfg["parallel"])
            self.notes[step.label] = f"{rounds} rounds, each waiting for the one before"
            return self.generate(step, deps, cfg["batches"],
                                 self.a.train_request_tokens * cfg["per_batch"], rounds)
        if step.stage == "teacher_labels":
            tr = by_label["train_requests"].config
            reqs = tr["batches"] * tr["per_batch"] + (tr.get("own") or {}).get("n", 0)
            return self.rate(step, deps, reqs * cfg["items_per_request"], reqs, self.item_tokens)
        if step.stage in ("judge", "judge_validation"):
            ks = cfg["ks"]
            if step.stage == "judge":
                cells = {tuple(c[:3]) + (c[5],) for c in cfg["sweeps"]}
                ws = cfg["ws"] or cfg["sweep_ws"]
                measured = self.ms["judge_distinct"]  # (share, w values judged, source)
                share = self.a.judge_distinct or (measured[0] if measured else 1.0)
                self.notes[step.label] = f"{share:.2f} of judged cells are distinct feeds (" + (
                    "assumed" if self.a.judge_distinct else
                    f"measured over {measured[1]} w values: {measured[2]}" if measured else
                    "no measurement: every cell") + ")"
                reqs, feeds = users, users * len(cells) * len(ws) * len(ks) * share
            else:
                reqs = min(cfg["requests"] or users, users)
                feeds = reqs * 2 * cfg["planted"] * len(ks)
            k = sum(ks) / len(ks)
            if cfg["mode"] == "item":
                return self.rate(step, deps, feeds * k, reqs, self.item_tokens)
            return self.rate(step, deps, feeds, reqs, k * self.item_tokens)
        raise ValueError(f"{step.label}: no projection rule for LLM stage {step.stage!r}")

    # --- other steps -------------------------------------------------------------------------
    def cpu_seconds(self, step) -> float:
        """The measured wall time of this step (or of one of its stage) in the scaling run,
        scaled by the embedding model's size when it differs."""
        cpu, models = self.ms["cpu"], self.ms["stage_models"]
        label = step.label if step.label in cpu else next(
            (k for k in cpu if k.split("[")[0] == step.stage), None)
        if label is None:
            self.notes[step.label] = "not measured: counted as 0 s"
            return 0.0
        seconds = cpu[label] or 0.0
        mine, theirs = step.config.get("model"), models.get(label)
        if isinstance(mine, str) and theirs and mine != theirs:
            try:  # embedding models: the work grows with their size
                seconds *= self.a.params(mine) / self.a.params(theirs)
                self.notes[step.label] = f"{label} measured, scaled by model size ({theirs} → " \
                                         f"{mine})"
            except ValueError:
                self.notes[step.label] = f"{label} measured with {theirs}, not {mine} (not scaled)"
        elif label != step.label:
            self.notes[step.label] = f"as {label} measured"
        theirs_text = self.ms["suite"].get("data", {}).get("items", {}).get("text", "basic")
        if step.stage == "item_embeddings" and theirs_text == "basic":
            seconds *= self.item_tokens / self.tp["suffix_tokens"]  # longer texts to embed
        if step.stage == "engagement":
            e, theirs_e = self.suite.engagement, self.ms["suite"]["engagement"]
            if getattr(e, "epochs", None) and theirs_e.get("epochs") and \
                    e.epochs != theirs_e["epochs"]:
                seconds *= e.epochs / theirs_e["epochs"]
        return seconds

    def student(self, step, deps, by_label: dict) -> Work:
        """Two towers trained on the teacher's pairs: forward and backward passes over both texts
        of every training pair, at the encoder cost model's per-text time."""
        tl = next(s for s in by_label.values() if s.stage == "teacher_labels")
        tr = by_label["train_requests"].config
        reqs = tr["batches"] * tr["per_batch"] + (tr.get("own") or {}).get("n", 0)
        pairs = reqs * tl.config["items_per_request"] * (1 - step.config["val_fraction"])
        e = self.tp["encode"]
        params = self.a.params(step.config["model"])
        per_text = e["per_request_s"] * params / self.tp["encode_params"]
        seconds = e["fixed_s"] + step.config["epochs"] * pairs * 2 * self.a.train_passes * per_text
        if self.load_rate():
            seconds += 2 * params * self.a.bytes_per_param / self.load_rate()
        self.notes[step.label] = "estimated from the encoder cost model (not measured)"
        return Work(step.label, deps, seconds, gpus_per_worker=step.gpus)

    def steps(self, plan) -> list[Work]:
        by_label = {s.label: s for s in plan}
        works = [Work("start-up", fixed_s=self.ms["startup_s"])]
        f = self.facts
        for s in plan:
            deps = tuple(s.deps) or ("start-up",)
            if s.llm:
                works.append(self.llm_step(s, by_label, deps))
            elif s.stage == "student":
                works.append(self.student(s, deps, by_label))
            elif s.stage == "sweep":
                lo, hi = s.config["rows"]
                items = f["candidates_all"] if s.config["pool"] == "all" else f["candidates"]
                works.append(Work(s.label, deps, (hi - lo) * items * len(s.config["ws"])
                                  * len(s.config["ks"]) * self.sweep_unit))
            else:
                works.append(Work(s.label, deps, self.cpu_seconds(s),
                                  gpus_per_worker=s.gpus if s.gpus else 0.0))
        works.append(Work("reports", tuple(w.label for w in works), self.ms["reports_s"]))
        return works


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def write(out: Path, works: list[Work], gpus: list[int], context: dict) -> str:
    import pandas as pd

    rows = project(works, gpus)
    f = serial_fraction(works, min(gpus))
    base = min(gpus)
    per_step = [{"gpus": g, "step": w.label, "seconds": w.seconds(g), "basis": "projected"}
                for g in gpus for w in works]
    totals = [{"gpus": r["gpus"], "step": "TOTAL (wall)", "seconds": r["seconds"],
               "speedup": r["speedup"], "efficiency": r["efficiency"],
               "gpu_hours": r["gpu_hours"], "amdahl_seconds": r["amdahl_seconds"],
               "basis": "projected"} for r in rows]
    pd.DataFrame(totals + per_step).to_csv(out / "projection.csv", index=False)
    t1, tinf = wall_seconds(works, base), wall_seconds(works, INF)
    top = sorted(works, key=lambda w: -w.seconds(base))[:6]
    big = max(gpus)
    lines = [f"# PROJECTED: {context['suite']} on {', '.join(map(str, gpus))} GPUs", "",
             ("**Every number on this page is projected (P), not measured.** It comes from the "
              "measured inputs listed below and from stated assumptions; no GPU ran this suite."),
             "", ("| GPUs | wall time (P) | speedup (P) | efficiency (P) | GPU-hours (P) | "
                  "Amdahl, same serial fraction (P) | workers lent more GPUs |"),
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['gpus']} | {_hours(r['seconds'])} P | {r['speedup']:.1f}× P | "
                     f"{r['efficiency']:.2f} P | {r['gpu_hours']:.1f} P | "
                     f"{_hours(r['amdahl_seconds'])} P | {', '.join(r['lent']) or '–'} |")
    lines += ["", (f"**Serial fraction (Amdahl): {f:.3f} P** — with unlimited GPUs (every shard "
                   f"on a worker of its own) the run still takes {_hours(tinf)} P of its "
                   f"{_hours(t1)} P on {base} GPU(s), so no cluster makes it more than "
                   f"{1 / f:.1f}× faster. The longest path at {big} GPUs, steps of a second or more, "
                   "longest first:"), ""]
    path = [w for w in works if w.label in critical_path(works, big)]
    lines += [f"- {w.label}: {_hours(w.seconds(big))} P" + (
        f" ({context['notes'][w.label]})" if w.label in context["notes"] else "")
        for w in sorted(path, key=lambda w: -w.seconds(big)) if w.seconds(big) >= 1]
    lines += ["", f"Largest steps on {base} GPU(s): " + "; ".join(
        f"{w.label} {_hours(w.seconds(base))} P" for w in top) + ".", "",
        "## The model", "",
        ("A step takes a fixed part (CPU work, the model load of its pool, the stage's own "
        "coordination) plus, for LLM steps, rounds of shards: with w workers a round of s shards "
        "takes ceil(s / w) shard times (shards are fixed by content, `shard_size` prompts each). "
        "Workers = GPUs // GPUs per worker. GPU steps run one after another in plan order (they "
        "share the GPUs); CPU steps overlap them where the plan allows. Wall time = the longest "
        "path. Speedup and efficiency are against the smallest GPU count; GPU-hours = GPUs × wall "
        "(the whole cluster held). The serial fraction is wall(∞ GPUs) / wall(1 GPU); Amdahl's "
        "column is T1 · (f + (1 − f) / N); the projection is faster where CPU steps overlap GPU "
         "steps, slower where a step has fewer shards than workers."), "", "## Inputs", ""]
    lines += [f"- {k}: {v}" for k, v in context["inputs"].items()]
    lines += ["", "## Assumptions (change with `--assume KEY=VALUE`)", ""]
    lines += [f"- {k}: {v}" for k, v in context["assumptions"].items()]
    lines += ["", "## Notes per step", ""]
    lines += [f"- {k}: {v}" for k, v in context["notes"].items()]
    text = "\n".join(lines) + "\n"
    (out / "projection.md").write_text(text)
    return text


def run(args) -> int:
    """`bench project`: write projection.md and projection.csv beside the scaling run."""
    from ..plan import build_plan
    from ..suitefile import load_suite
    from . import inputs
    from .run import ScaleError, parse_counts

    gpus = parse_counts(args.gpus, "--gpus")
    scaling = Path(args.scaling)
    try:
        assume = inputs.load_assumptions(args.assume)
        ms = inputs.measured(scaling)
        # the distinct-feed share from the run that judged the most w values
        other = inputs.judge_share_of_run(Path(args.judge_run))
        if other and (not ms["judge_distinct"] or other[1] > ms["judge_distinct"][1]):
            ms["judge_distinct"] = other
        tp = inputs.throughput(Path(args.throughput))
        unit, unit_source = inputs.sweep_unit_seconds([Path(args.sweep_run) / "manifest.json"])
    except ValueError as exc:
        raise ScaleError(str(exc)) from None
    suite = load_suite(args.suite, args.overrides)
    facts = inputs.dataset_facts(suite)
    plan = build_plan(suite, facts["users"], gpus=float(max(gpus)))
    chars = int(4 * (tp["prefix_tokens"] + item_tokens(suite, tp, assume)))  # ~4 per token
    cache = inputs.cache_costs(chars)
    p = Projector(suite, facts, ms, tp, unit, assume, cache)
    try:
        works = p.steps(plan)
    except ValueError as exc:
        raise ScaleError(f"{args.suite}: {exc}") from None
    m = ms["machine"]
    context = {
        "suite": f"{suite.name} ({args.suite}{' with --set' if args.overrides else ''})",
        "notes": p.notes,
        "assumptions": assume.model_dump(),
        "inputs": {
            "suite": f"{args.suite} {' '.join(args.overrides)}".strip() + f": {facts['users']} "
                     f"users, {facts['items']} items, {facts['candidates']:.0f} candidates per "
                     "user",
            "measured here (M)": f"{ms['source']} ({ms['workers']} worker(s), commit "
                                 f"{ms['git_commit']}; {m.get('cpu')}, {m.get('cpu_count')} cores, "
                                 f"{m.get('cpu_capability')}): CPU stages, start-up "
                                 f"{ms['startup_s']:.1f} s M, reports {ms['reports_s']:.1f} s M, "
                                 f"fixed coordination per LLM stage {ms['stage_fixed_s']:.2f} s M, "
                                 f"the stages' own work {ms['own_per_prompt_s'] * 1e3:.3f} ms M "
                                 "per prompt (small shards; not used, see the answer cache)"
                                 + ("" if ms["own_recorded"] else " (not recorded)")
                                 + ", model load "
                                 + (f"{ms['load_bytes_per_s'] / 1e9:.2f} GB/s M"
                                    if ms["load_bytes_per_s"] else "not measured (0 s)")
                                 + (f"; CPU worker {ms['cpu_busy_prompts_per_s']:.2f} prompts/s "
                                    "busy M (for comparison only)"
                                    if ms["cpu_busy_prompts_per_s"] else ""),
            "GPU cost models (M on the GPU, fitted)": f"{tp['source']} ({tp['gpu']}): "
                f"{tp['rate_label']}: {tp['rate']}; {tp['encode_label']}: {tp['encode']}; "
                f"{tp['prefix_tokens']:.0f} prefix + {tp['suffix_tokens']:.1f} item tokens per "
                f"prompt; memory bandwidth {tp['bandwidth'] / 1e9:.0f} GB/s",
            "sweep": f"{unit * 1e9:.2f} s per 10^9 user × item × w × k M ({unit_source})",
            "answer cache (measured here at projection time, M)":
                f"{cache['per_prompt_s'] * 1e6:.1f} µs per prompt (key, lookup; "
                f"{cache['chars']}-character prompts), {cache['per_shard_s'] * 1e3:.2f} ms per "
                "shard commit: counted as serial work of each LLM stage",
            "item tokens per prompt": f"{p.item_tokens:.0f}",
        }}
    out = Path(args.out) if args.out else scaling
    out.mkdir(parents=True, exist_ok=True)
    print(write(out, works, gpus, context))
    print(f"written: {out}/projection.md, projection.csv")
    return 0
