"""From a suite to a plan: the list of steps (stage + config + inputs), each with its cache key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ctrlrec.embeddings import PACKAGED as EMBEDDING_PACKAGED
from ctrlrec.embeddings import SPLIT_PACKAGED as EMBEDDING_SPLIT_PACKAGED
from ctrlrec.hardware import resolve_dtype
from ctrlrec.llm.models import PACKAGED_LLMS
from ctrlrec.llm.revision import model_revision

from .cache import stage_key
from .codehash import SourceIndex, code_hash
from .methods import METHODS
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
    version: int = 0     # the code version in the key (0: the stage's own, bench.stages.VERSIONS)
    llm: dict | None = None  # the LLM pool it needs: model key, runtime, threads, GPUs, workers
    code: str = ""       # hash of the project code `fn` can reach (part of the key)

    @property
    def llm_config(self) -> dict | None:
        """The LLM settings in its key: its own `llm`, or the item texts' writer (dataset)."""
        return self.config.get("llm") or self.config.get("items", {}).get("llm")


def values_label(method: str, context: str) -> str:
    return f"values[{method},{context}]" if METHODS[method].uses_context else f"values[{method}]"


def sweep_context(method: str, context: str) -> str:
    """The context a sweep of this method is labelled with: '*' when its values ignore it."""
    return context if METHODS[method].uses_context else "*"


def embeddings_label(model: str, dtype: str) -> str:
    # float32 keeps the label it had before dtypes were configurable
    return f"item_embeddings[{model}]" if dtype == "float32" \
        else f"item_embeddings[{model},{dtype}]"


def build_plan(suite: Suite, n_users: int, gpus: float = 0.0,
               sources: SourceIndex | None = None) -> list[Step]:
    """Steps in dependency order. `n_users` is the number of evaluated users (for sweep chunks);
    `gpus`: the GPUs of the cluster, which decide where LLM steps run and so what `dtype: auto`
    resolves to (CPU steps resolve for the CPU of the machine that plans); `sources`: the code
    whose hash goes into each key (default: this checkout's, bench/codehash.py). With several
    seeds, each seed's plan is built alone and the plans merged (bench/seeds.py)."""
    from .seeds import merge_seeds
    return merge_seeds({seed: _seed_plan(suite, seed, n_users, gpus, sources)
                        for seed in suite.seeds})


def _seed_plan(suite: Suite, seed: int, n_users: int, gpus: float,
               sources: SourceIndex | None) -> list[Step]:
    key = lambda llm: llm_key(llm, gpus)  # noqa: E731
    steps = [
        Step("dataset", "dataset", "bench.stages.data:dataset_stage",
             _data_config(suite, key),
             **(_llm_resources(suite.data.items.llm, key) if suite.data.items.text == "summary"
                else {})),
        Step("engagement", "engagement", "bench.stages.data:engagement_stage",
             {**suite.engagement.model_dump(mode="json"), "seed": seed}, ["dataset"]),
        Step("requests", "requests", "bench.stages.data:requests_stage",
             _requests_config(suite, key, seed),
             ["dataset"], **(_llm_resources(suite.requests.llm, key)
                             if suite.requests.generator == "llm" else {})),
    ]
    labels = {s.label for s in steps}

    def add(step):
        if step.label not in labels:
            steps.append(step)
            labels.add(step.label)

    def embeddings(model, dtype):
        label = embeddings_label(model, dtype)
        # every stage that uses the encoder depends on this step, so its revision reaches them
        add(Step(label, "item_embeddings", "bench.stages.data:item_embeddings_stage",
                 {"model": model, "dtype": dtype,
                  **path_revision(model, {*EMBEDDING_PACKAGED, *EMBEDDING_SPLIT_PACKAGED})},
                 ["dataset"]))
        return label

    pool = ({"kind": "all"} if suite.pool.kind == "all" else  # the key holds what it reads
            {**suite.pool.model_dump(mode="json"), "seed": seed,
             "dtype": resolve_dtype(suite.pool.dtype, "cpu")})
    if suite.pool.kind == "shortlist" and not suite.pool.untrained:
        pool = {k: v for k, v in pool.items() if k not in ("model", "dtype")}
    if not suite.pool.per_category:  # keys from before the nominator existed stay as they were
        pool.pop("per_category", None)
    pool_deps = ["dataset", "engagement", "requests"]
    if suite.pool.kind == "shortlist" and suite.pool.untrained:
        pool_deps.append(embeddings(suite.pool.model, pool["dtype"]))
    add(Step("pool", "pool", "bench.stages.data:pool_stage", pool, pool_deps))
    for m in suite.methods:
        entry = METHODS[m.name]
        cfg = {k: v for k, v in m.model_dump(mode="json").items() if k in entry.key_fields}
        if "dtype" in cfg:
            cfg["dtype"] = resolve_dtype(m.dtype, "cpu")
        if "llm" in cfg:
            cfg.update(llm=key(m.llm), _runtime={"llm": llm_runtime(m.llm)})
        inputs = {"dataset": lambda: "dataset", "requests": lambda: "requests",
                  "pool": lambda: "pool",
                  "item_embeddings": lambda: embeddings(m.model, resolve_dtype(m.dtype, "cpu")),
                  "student": lambda: _distill_steps(m, add, embeddings, suite, key, seed)}
        resources = _llm_resources(m.llm, key) if "llm" in entry.models \
            else {"cpus": entry.cpus}
        for ctx in suite.contexts:
            label = values_label(m.name, ctx)
            add(Step(label, "values", entry.fn, {**cfg, "context": ctx} if entry.uses_context
                     else cfg, [inputs[x]() for x in entry.inputs], version=entry.version,
                     **resources))
            for agg, over, lo, hi in sweep_slices(suite, entry, n_users):
                tag = "" if over == suite.pool.kind else f"{over},"  # the suite's own: no tag
                add(Step(f"sweep[{label[7:-1]},{agg},{tag}{lo}:{hi}]", "sweep",
                         "bench.stages.evaluate:sweep_stage",
                         {"aggregation": agg, "ws": suite.ws(), "ks": sorted(suite.k),
                          "rows": [lo, hi], "pool": over,
                          "cell": [m.name, sweep_context(m.name, ctx), agg, lo, hi, over]},
                         ["dataset", "engagement", label, "requests", "pool"]))
    if suite.judge is not None:
        sweeps = [s for s in steps if s.stage == "sweep"]
        j = suite.judge
        judging = {"llm": key(j.llm), "_runtime": {"llm": llm_runtime(j.llm)}, "mode": j.mode,
                   "ks": j.k, "mass_threshold": j.mass_threshold}
        if j.validate_judge:  # needs only the requests, so it runs long before the judge
            add(Step("judge_validation", "judge_validation",
                     "bench.stages.judge:judge_validation_stage",
                     {**judging, "planted": j.planted, "requests": j.validate_requests,
                      "seed": seed, "history_from": suite.requests.history_from},
                     ["dataset", "requests"], **_llm_resources(j.llm, key)))
        add(Step("judge", "judge", "bench.stages.evaluate:judge_stage",
                 {**judging, "ws": j.ws, "sweep_ws": suite.ws(),
                  "sweeps": [s.config["cell"] for s in sweeps]},
                 ["dataset", "requests", *[s.label for s in sweeps]], **_llm_resources(j.llm, key)))
    keys: dict[str, str] = {}
    for s in steps:
        s.code = code_hash(s.fn, sources)
        s.key = stage_key(s.stage, s.version or VERSIONS[s.stage], s.config,
                          [keys[d] for d in s.deps], s.code)
        keys[s.label] = s.key
    return steps


def sweep_slices(suite: Suite, entry, n_users: int):
    """(aggregation, pool, first row, end row) of a method's sweeps: over the suite's pool, and
    also over all items when the pool is a shortlist and the method's values cover every item."""
    pools = [suite.pool.kind] + (["all"] if suite.pool.kind != "all" and entry.full_set else [])
    for agg in suite.aggregation:
        for over in pools:
            for lo in range(0, n_users, SWEEP_CHUNK):
                yield agg, over, lo, min(lo + SWEEP_CHUNK, n_users)


def _distill_steps(m, add, embeddings, suite: Suite, key, seed: int) -> str:
    """Training requests -> teacher labels -> student, seeded by the run's seed (seed 0, the only
    one before `seeds`, keeps its keys); returns the student's label."""
    d = m.distill
    teacher = {"llm": key(d.teacher), "_runtime": {"llm": llm_runtime(d.teacher)}}
    cfg = {**teacher, "batches": d.batches, "per_batch": d.per_batch, "parallel": d.parallel,
           "seed": seed}
    # the training prompts speak of the dataset's items: keyed by it (ml-100k keeps its old key)
    deps = [] if dataset_impl(suite, "train_requests_without_dataset") else ["dataset"]
    if d.own_requests:  # only then in the key, so existing caches stay valid
        r = suite.requests
        cfg["own"] = {"n": d.own_requests, "kind": r.kind, "users": suite.users,
                      "seed": seed, **({"history_from": r.history_from, "unique": r.unique}
                                             if r.kind == "open_ended" else {})}
        deps = ["dataset"]
    add(Step("train_requests", "train_requests", "bench.stages.distill:train_requests_stage",
             cfg, deps,
             **_llm_resources(d.teacher, key)))
    dtype = resolve_dtype(m.dtype, "cpu")
    add(Step("teacher_labels", "teacher_labels", "bench.stages.distill:teacher_labels_stage",
             {**teacher, "model": m.model, "dtype": dtype,
              "items_per_request": d.items_per_request, "mass_threshold": d.mass_threshold,
              "seed": seed},
             ["dataset", "train_requests", embeddings(m.model, dtype)],
             **_llm_resources(d.teacher, key)))
    add(Step("student", "student", "bench.stages.distill:student_stage",
             {"model": m.model, "mass_threshold": d.mass_threshold, "val_fraction": d.val_fraction,
              "epochs": d.epochs, "lr": d.lr, "rank_loss": d.rank_loss, "seed": seed},
             ["dataset", "teacher_labels"], cpus=d.threads, gpus=d.num_gpus))
    return "student"


def dataset_impl(suite: Suite, flag: str | None = None):
    """The module of the suite's dataset (or, with `flag`, that attribute of its entry)."""
    from ctrlrec.datasets import dataset_entry
    entry = dataset_entry(suite.data.dataset)
    return getattr(entry, flag) if flag else entry.impl()


def _data_config(suite: Suite, key) -> dict:
    cfg = suite.data.model_dump(mode="json")
    files = dataset_impl(suite).fingerprint(suite.data.path, **suite.data.options())
    if files:  # the data's content, where the suite's keys do not pin it (e.g. a folder's CSVs)
        cfg["files"] = files
    if suite.data.items.text == "basic":  # keep the key free of settings it ignores
        cfg["items"] = {"text": "basic"}
    else:
        cfg["items"]["llm"] = key(suite.data.items.llm)
        cfg["_runtime"] = {"llm": llm_runtime(suite.data.items.llm)}
    return cfg


def _llm_resources(llm, key) -> dict:
    """An LLM step only coordinates (0 CPUs): the model runs in a pool of workers that the runner
    starts for it, each with the step's threads and GPUs (bench/llmpool.py)."""
    return {"cpus": 0, "gpus": 0.0,
            "llm": {"key": key(llm), "runtime": llm_runtime(llm), "threads": llm.threads,
                    "gpus": llm.num_gpus, "workers": llm.workers}}


def llm_key(llm, gpus: float = 0.0) -> dict:
    """The LLM settings that can change answers (they enter cache keys); the rest is runtime.
    `dtype: auto` is resolved for the device the step will run on; a server (openai) keeps its
    own dtype, which the key records as `auto`."""
    d = {k: getattr(llm, k) for k in ("backend", "model", "dtype", "batch_size", "threads",
                                      "prefix_reuse", "shard_size")}
    if llm.backend == "llamacpp":  # it computes with the GGUF's own quantised weights
        d["dtype"] = "gguf"
    elif llm.backend != "openai":
        d["dtype"] = resolve_dtype(llm.dtype, "cuda" if llm.num_gpus and gpus else "cpu")
    if llm.backend != "openai":  # a server's weights are its own
        d |= path_revision(llm.model, PACKAGED_LLMS)
    if llm.tokenizer:
        d["tokenizer"] = llm.tokenizer
    if llm.backend == "openai":
        d["base_url"] = llm.base_url
    if llm.backend == "vllm":
        d["tensor_parallel_size"] = llm.tensor_parallel_size
    if llm.backend == "llamacpp":  # other kernels, answers that differ in the last digits
        d["repack"] = llm.repack
    return d


def path_revision(model: str, packaged) -> dict:
    """{"revision": fingerprint of its files} for a model given by its path, so that new weights
    saved at that path are another model; nothing for a packaged name (pinned by its package)
    or a hub id, so that their keys stay as they were."""
    p = Path(model).expanduser()
    if model in packaged or not p.exists():
        return {}
    return {"revision": model_revision(str(p))}


def llm_runtime(llm) -> dict:
    return {"api_key_env": llm.api_key_env, "gpu_memory_utilization": llm.gpu_memory_utilization,
            "retries": llm.retries, "timeout": llm.timeout}


def _requests_config(suite: Suite, key, seed: int) -> dict:
    cfg = {**suite.requests.model_dump(mode="json"), "users": suite.users, "seed": seed}
    if suite.requests.kind != "open_ended":
        cfg.pop("unique")
    if suite.requests.generator == "template":  # keep the key free of settings it ignores
        cfg.pop("llm")
        cfg.pop("history_from")
    else:
        cfg["llm"] = key(suite.requests.llm)
        cfg["_runtime"] = {"llm": llm_runtime(suite.requests.llm)}
    return cfg


def n_evaluated(suite: Suite, total_users: int | None = None) -> int:
    """Evaluated users: every evaluable user (a train and a test rating), or the suite's sample.
    Under the per-user split those are the users with two ratings or more, which the dataset's
    plug-in counts without reading the data; one cutoff in time for all needs the ratings."""
    if total_users is None:
        total_users = n_evaluable(suite)
    return total_users if suite.users == "all" else min(suite.users, total_users)


def n_evaluable(suite: Suite) -> int:
    data = suite.data
    if data.split.kind == "per_user_chronological":
        return dataset_impl(suite).n_users(data.path, **data.options())
    from ctrlrec.data import split_ratings
    from ctrlrec.datasets import load_dataset

    ratings = load_dataset(data.dataset, data.path, **data.options()).ratings
    return len(split_ratings(ratings, data.split.kind, data.split.train_fraction)
               .evaluable_users())
