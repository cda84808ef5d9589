"""What a projection starts from: the assumptions it states, the measured scaling run (this
machine), the committed GPU throughput measurements and cost models, a full-scale sweep, and the
projected suite's dataset."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .report import pool_busy, stage_pool_work


class Assumptions(BaseModel):
    """Numbers the projection needs that no committed measurement holds; each can be changed
    with `--assume KEY=VALUE` and is printed in projection.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # billions of parameters, from the model cards; scales the measured 8B costs to each model
    params_b: dict[str, float] = {
        "meta-llama/Llama-3.1-8B-Instruct": 8.03, "meta-llama/Llama-3.3-70B-Instruct": 70.6,
        "Qwen/Qwen2.5-7B-Instruct": 7.62, "dunzhang/stella_en_400M_v5": 0.435,
        "all-MiniLM-L6-v2": 0.0227, "all-mpnet-base-v2": 0.109}
    bytes_per_param: float = Field(2.0, gt=0)       # bf16 weights on the GPUs
    request_tokens: int = Field(48, ge=1)           # new tokens of one LLM genre request
    train_request_tokens: int = Field(40, ge=1)     # new tokens per training request asked for
    history_line_tokens: int = Field(15, ge=0)      # prompt tokens per history:N line
    summary_fill: float = Field(1.0, ge=0, le=1)    # share of summary_tokens a profile uses
    judge_distinct: float | None = Field(None, gt=0, le=1)  # distinct feeds / judged cells
    train_passes: float = Field(3.0, gt=0)          # one training step ≈ 3 forward passes
    load_gb_per_s: float | None = Field(None, gt=0)  # model loading; None: as measured here

    def params(self, model: str) -> float:
        name = Path(model).name if model not in self.params_b else model
        for key, value in self.params_b.items():
            if key == model or Path(key).name == name:
                return value * 1e9
        raise ValueError(f"no parameter count for model {model!r}; add one with "
                         f"--assume 'params_b={{\"{model}\": BILLIONS}}'")


def load_assumptions(pairs: list[str]) -> Assumptions:
    """`--assume KEY=VALUE` (value read as YAML; a mapping is merged into params_b)."""
    import yaml
    from pydantic import ValidationError

    values: dict = {}
    for text in pairs:
        if "=" not in text:
            raise ValueError(f"--assume {text!r}: expected KEY=VALUE, e.g. summary_fill=0.5")
        key, raw = text.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"--assume {text!r}: the value is not valid YAML") from None
        if key.strip() == "params_b" and isinstance(value, dict):
            value = {**Assumptions().params_b, **values.get("params_b", {}), **value}
        values[key.strip()] = value
    try:
        return Assumptions(**values)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise ValueError(f"--assume {where}: {e['msg']} (got {e.get('input')!r}); allowed: "
                         f"{', '.join(Assumptions.model_fields)}") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable ({type(exc).__name__})") from None


def measured(scaling_dir: Path) -> dict:
    """From the scaling run with the fewest workers: what each non-LLM stage took, start-up and
    report time, the stages' own coordination, model-load speed and the CPU per-shard cost."""
    info = _read_json(scaling_dir / "scaling.json")
    run = info["runs"][0]
    n, stages = run["workers"], run["stages"]
    llm = {label: s for label, s in stages.items() if s["llm"]}
    own = sum(s.get("own_seconds") or 0 for s in llm.values())
    prompts = sum(s.get("prompts") or 0 for s in llm.values())
    residuals, rates = [], []
    for pool in run["pools"]:
        workers = pool.get("worker_stats", [])
        loads = [w["load_seconds"] for w in workers if w.get("load_seconds")]
        load = max(loads, default=0.0)
        if loads and pool.get("model_bytes"):
            rates.append(pool["model_bytes"] / load)
        for i, label in enumerate(pool.get("steps", [])):
            s = stages.get(label)
            if not s or s["wall_seconds"] is None:
                continue
            work = stage_pool_work(run, label)
            # the workers' time on this stage's prompts (older runs: the share of each worker's
            # busy time that its per-stage counts give)
            busy = work["busy_seconds"] if work else sum(
                (w.get("busy_seconds") or 0) * (w.get("prompts_by_stage") or {}).get(label, 0)
                / w["prompts"] for w in workers if w.get("prompts"))
            residuals.append(max(0.0, s["wall_seconds"] - (s.get("own_seconds") or 0)
                                 - busy / n - (load if i == 0 else 0.0)))
    busy, answered = pool_busy(run)
    return {"source": str(scaling_dir), "workers": n, "git_commit": info.get("git_commit"),
            "machine": info.get("machine", {}), "suite": info["suite"],
            "stage_models": info.get("stage_models", {}),
            "cpu": {label: s["wall_seconds"] for label, s in stages.items() if not s["llm"]},
            "startup_s": max(0.0, run["run_seconds"] - run["critical_path_seconds"]),
            "reports_s": max(0.0, run["process_seconds"] - run["run_seconds"]),
            "stage_fixed_s": statistics.median(residuals) if residuals else 0.0,
            "own_per_prompt_s": own / prompts if prompts else 0.0,
            "own_recorded": any(s.get("own_seconds") is not None for s in llm.values()),
            "load_bytes_per_s": statistics.median(rates) if rates else None,
            "cpu_busy_prompts_per_s": answered / busy if busy else None,
            "judge_distinct": judge_share(info["suite"], run.get("llm") or {}, str(scaling_dir))}


def judge_share(suite: dict, llm: dict, source: str) -> tuple[float, int, str] | None:
    """(distinct feeds / judged cells, w values judged, source) of a run with a judge: many w
    values give the same list, and the denser the judged w grid the smaller the share."""
    stats = llm.get("judge") or {}
    if not (suite.get("judge") and stats.get("cells_x_users") and stats.get("prompts")):
        return None
    ws = suite["judge"].get("ws") or range(_n_ws(suite["w_control"]))
    return stats["prompts"] / stats["cells_x_users"], len(ws), source


def judge_share_of_run(folder: Path) -> tuple[float, int, str] | None:
    """judge_share of a finished run folder (None when it has no manifest or no judge)."""
    path = folder / "manifest.json"
    if not path.exists():
        return None
    m = _read_json(path)
    return judge_share(m["suite"], m.get("llm") or {}, str(folder))


def throughput(folder: Path) -> dict:
    """The direct path's cost model (rating prompts) and the encoder's, with the sizes they were
    measured at, and the GPU's measured memory bandwidth (decode steps)."""
    meas = _read_json(folder / "measurements.json")
    models = _read_json(folder / "cost_models.json")
    try:
        direct = next(p for p in meas["paths"] if p["method"] == "direct")
        enc = next(p for p in meas["paths"] if p["method"] == "distilled")
    except StopIteration:
        raise ValueError(f"{folder}: needs a measured direct and distilled path") from None
    hw = meas["hardware"]
    return {"source": str(folder), "gpu": hw.get("gpu") or hw.get("device"),
            "rate": models[direct["label"]]["direct"]["terms"], "rate_label": direct["label"],
            "rate_params": direct["params"], "prefix_tokens": direct["prefix_tokens"],
            "suffix_tokens": direct["suffix_tokens"],
            "encode": models[enc["label"]]["encode"]["terms"], "encode_label": enc["label"],
            "encode_params": enc["params"],
            "bandwidth": hw.get("measured_bandwidth") or hw["bandwidth"]}


def _n_ws(w_control) -> int:
    if isinstance(w_control, dict):
        return round((w_control["stop"] - w_control["start"]) / w_control["step"]) + 1
    return len(w_control)


def sweep_unit_seconds(manifests: list[Path]) -> tuple[float, str]:
    """Sweep seconds per (user × candidate item × w × k) of one method, from the run with the
    most units among those given whose pool is `all` (small runs are mostly fixed cost)."""
    best = None
    for path in manifests:
        m = _read_json(path)
        if (m.get("pool") or {}).get("kind") != "all":
            continue
        sweeps = {k: t for k, t in m["stages"].items() if k.startswith("sweep[")
                  and not t.get("cached")}
        if not sweeps:
            continue
        groups = {k.rsplit(",", 1)[0] for k in sweeps}
        units = (m["n_users"] * m["pool"]["mean_items_per_user"] * _n_ws(m["suite"]["w_control"])
                 * len(m["suite"]["k"]) * len(groups))
        if best is None or units > best[0]:
            best = (units, sum(t["seconds"] for t in sweeps.values()) / units, str(path))
    if best is None:
        raise ValueError("no cold run over all items to take the sweep cost from (give --sweep-run "
                         "a run folder of suites/genre_untrained.yaml)")
    return best[1], best[2]


def dataset_facts(suite) -> dict:
    """Items, evaluated users and candidate items per user of the projected suite."""
    from ctrlrec.data import split_ratings
    from ctrlrec.datasets import load_dataset

    from ..plan import n_evaluated

    data = load_dataset(suite.data.dataset, suite.data.path, **suite.data.options())
    split = split_ratings(data.ratings, suite.data.split.kind, suite.data.split.train_fraction,
                          item_ids=data.items.item_id.to_numpy())
    n_items = len(data.items)
    train = split.train[split.train.user_id.isin(split.evaluable_users())]
    every = n_items - train.groupby("user_id").item_id.nunique().mean()
    short = sum(n * (len(data.info.request_categories) if name == "per_category" else 1)
                for name, n in suite.pool.nominators())  # per_category: n of each category
    return {"items": n_items, "users": n_evaluated(suite), "candidates_all": float(every),
            "candidates": float(every if suite.pool.kind == "all" else min(short, every))}


def cache_costs(chars: int, n: int = 4096, shard: int = 64) -> dict:
    """The answer cache's own work, measured here on the real cache (a temporary file): seconds
    per prompt to key and look it up, and per shard to commit its answers. A stage does this
    work itself, one shard after another, however many workers answer."""
    import tempfile
    import time

    from ctrlrec.llm.backends import Rating
    from ctrlrec.llm.cache import LLMCache, call_key

    identity = {"backend": "vllm", "model": "m", "revision": "r", "dtype": "bfloat16"}
    prompts = [f"{i:08d} " + "x" * chars for i in range(n)]
    answer = Rating(3.2, 0.99, (0.1, 0.1, 0.4, 0.3, 0.1)).as_json()
    with tempfile.TemporaryDirectory() as folder:
        cache = LLMCache(Path(folder) / "llm.sqlite")
        t0 = time.perf_counter()
        keys = [call_key(identity, "rate", p, {}) for p in prompts]
        cache.get_many(keys)
        per_prompt = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for lo in range(0, n, shard):
            cache.put_many("rate", dict.fromkeys(keys[lo:lo + shard], answer))
        per_shard = (time.perf_counter() - t0) / math.ceil(n / shard)
        cache.close()
    return {"per_prompt_s": per_prompt, "per_shard_s": per_shard, "chars": chars}


def shards(prompts: float, size: int) -> int:
    return max(1, math.ceil(prompts / size))
