"""From a suite to a plan: the list of steps (stage + config + inputs), each with its cache key."""

from __future__ import annotations

from dataclasses import dataclass, field

from .cache import stage_key
from .methods import METHOD_KEYS, METHODS, USES_CONTEXT
from .stages import VERSIONS
from .suite import Suite

SWEEP_CHUNK = 256  # users per sweep task; fixed, so results never depend on the worker count


@dataclass
class Step:
    label: str           # unique name in the plan, e.g. "values[untrained]"
    stage: str           # cache folder, e.g. "values"
    fn: str              # "module:function"
    config: dict
    deps: list[str] = field(default_factory=list)  # labels of the steps whose outputs it takes
    key: str = ""
    cpus: int = 1        # Ray CPUs (and torch threads) of the task
    gpus: float = 0.0    # Ray GPUs of the task (LLM stages on GPU machines)


def values_label(method: str, context: str) -> str:
    return f"values[{method},{context}]" if USES_CONTEXT[method] else f"values[{method}]"


def build_plan(suite: Suite, n_users: int) -> list[Step]:
    """Steps in dependency order. `n_users` is the number of evaluated users (for sweep chunks)."""
    steps = [
        Step("dataset", "dataset", "bench.stages:dataset_stage", _data_config(suite),
             **(_llm_resources(suite.data.items.llm) if suite.data.items.text == "summary"
                else {})),
        Step("engagement", "engagement", "bench.stages:engagement_stage",
             {**suite.engagement.model_dump(mode="json"), "seed": suite.seed}, ["dataset"]),
        Step("requests", "requests", "bench.stages:requests_stage", _requests_config(suite),
             ["dataset"], **(_llm_resources(suite.requests.llm)
                             if suite.requests.generator == "llm" else {})),
    ]
    labels = {s.label for s in steps}

    def add(step):
        if step.label not in labels:
            steps.append(step)
            labels.add(step.label)

    def embeddings(model):
        add(Step(f"item_embeddings[{model}]", "item_embeddings",
                 "bench.stages:item_embeddings_stage", {"model": model}, ["dataset"]))
        return f"item_embeddings[{model}]"

    pool = suite.pool.model_dump(mode="json")
    pool_deps = ["dataset", "engagement", "requests"]
    if suite.pool.kind == "shortlist" and suite.pool.untrained:
        pool_deps.append(embeddings(suite.pool.model))
    add(Step("pool", "pool", "bench.stages:pool_stage", pool, pool_deps))
    for m in suite.methods:
        cfg = {k: v for k, v in m.model_dump(mode="json").items() if k in METHOD_KEYS[m.name]}
        if "llm" in cfg:
            cfg.update(llm=llm_key(m.llm), _runtime={"llm": llm_runtime(m.llm)})
        for ctx in suite.contexts:
            label = values_label(m.name, ctx)
            if m.name == "untrained":
                add(Step(label, "values", METHODS[m.name], cfg, [embeddings(m.model), "requests"]))
            elif m.name == "distilled":
                add(Step(label, "values", METHODS[m.name], cfg,
                         [_distill_steps(m, add, embeddings, suite), "requests"], cpus=2))
            else:
                add(Step(label, "values", METHODS[m.name], {**cfg, "context": ctx},
                         ["dataset", "requests", "pool"], **_llm_resources(m.llm)))
            for agg in suite.aggregation:
                for lo in range(0, n_users, SWEEP_CHUNK):
                    hi = min(lo + SWEEP_CHUNK, n_users)
                    add(Step(f"sweep[{label[7:-1]},{agg},{lo}:{hi}]", "sweep",
                             "bench.stages:sweep_stage",
                             {"aggregation": agg, "ws": suite.ws(), "ks": sorted(suite.k),
                              "rows": [lo, hi],
                              "cell": [m.name, ctx if USES_CONTEXT[m.name] else "*", agg, lo, hi]},
                             ["dataset", "engagement", label, "requests", "pool"]))
    if suite.judge is not None:
        sweeps = [s for s in steps if s.stage == "sweep"]
        j = suite.judge
        add(Step("judge", "judge", "bench.stages:judge_stage",
                 {"llm": llm_key(j.llm), "_runtime": {"llm": llm_runtime(j.llm)},
                  "ks": j.k, "ws": j.ws,
                  "mass_threshold": j.mass_threshold, "sweep_ws": suite.ws(),
                  "sweeps": [s.config["cell"] for s in sweeps]},
                 ["dataset", "requests", *[s.label for s in sweeps]], **_llm_resources(j.llm)))
    keys: dict[str, str] = {}
    for s in steps:
        s.key = stage_key(s.stage, VERSIONS[s.stage], s.config, [keys[d] for d in s.deps])
        keys[s.label] = s.key
    return steps


def _distill_steps(m, add, embeddings, suite: Suite) -> str:
    """Training requests -> teacher labels -> student; returns the student's label."""
    d, seed = m.distill, 0
    teacher = {"llm": llm_key(d.teacher), "_runtime": {"llm": llm_runtime(d.teacher)}}
    cfg = {**teacher, "batches": d.batches, "per_batch": d.per_batch, "parallel": d.parallel,
           "seed": seed}
    deps = []
    if d.own_requests:  # only then in the key, so existing caches stay valid
        r = suite.requests
        cfg["own"] = {"n": d.own_requests, "kind": r.kind, "users": suite.users,
                      "seed": suite.seed, **({"history_from": r.history_from, "unique": r.unique}
                                             if r.kind == "open_ended" else {})}
        deps = ["dataset"]
    add(Step("train_requests", "train_requests", "bench.stages:train_requests_stage", cfg, deps,
             **_llm_resources(d.teacher)))
    add(Step("teacher_labels", "teacher_labels", "bench.stages:teacher_labels_stage",
             {**teacher, "model": m.model, "items_per_request": d.items_per_request,
              "mass_threshold": d.mass_threshold, "seed": seed},
             ["dataset", "train_requests", embeddings(m.model)], **_llm_resources(d.teacher)))
    add(Step("student", "student", "bench.stages:student_stage",
             {"model": m.model, "mass_threshold": d.mass_threshold, "val_fraction": d.val_fraction,
              "epochs": d.epochs, "lr": d.lr, "rank_loss": d.rank_loss, "seed": seed},
             ["dataset", "teacher_labels"], cpus=d.threads, gpus=d.num_gpus))
    return "student"


def _data_config(suite: Suite) -> dict:
    cfg = suite.data.model_dump(mode="json")
    if suite.data.items.text == "basic":  # keep the key free of settings it ignores
        cfg["items"] = {"text": "basic"}
    else:
        cfg["items"]["llm"] = llm_key(suite.data.items.llm)
        cfg["_runtime"] = {"llm": llm_runtime(suite.data.items.llm)}
    return cfg


def _llm_resources(llm) -> dict:
    return {"cpus": llm.threads, "gpus": llm.num_gpus}


def llm_key(llm) -> dict:
    """The LLM settings that can change answers (they enter cache keys); the rest is runtime."""
    d = {k: getattr(llm, k) for k in ("backend", "model", "dtype", "batch_size", "threads",
                                      "prefix_reuse")}
    if llm.tokenizer:
        d["tokenizer"] = llm.tokenizer
    if llm.backend == "openai":
        d["base_url"] = llm.base_url
    if llm.backend == "vllm":
        d["tensor_parallel_size"] = llm.tensor_parallel_size
    return d


def llm_runtime(llm) -> dict:
    return {"api_key_env": llm.api_key_env, "gpu_memory_utilization": llm.gpu_memory_utilization,
            "retries": llm.retries, "timeout": llm.timeout}


def _requests_config(suite: Suite) -> dict:
    cfg = {**suite.requests.model_dump(mode="json"), "users": suite.users, "seed": suite.seed}
    if suite.requests.kind != "open_ended":
        cfg.pop("unique")
    if suite.requests.generator == "template":  # keep the key free of settings it ignores
        cfg.pop("llm")
        cfg.pop("history_from")
    else:
        cfg["llm"] = llm_key(suite.requests.llm)
        cfg["_runtime"] = {"llm": llm_runtime(suite.requests.llm)}
    return cfg


def n_evaluated(suite: Suite, total_users: int = 943) -> int:
    return total_users if suite.users == "all" else min(suite.users, total_users)
