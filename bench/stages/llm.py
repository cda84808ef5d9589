"""How a stage reaches its LLM: through the answer cache, loading the model only for answers
that are not cached yet."""

from __future__ import annotations


def open_llm(llm: dict, runtime: dict | None = None):
    """(CachedLLM, tokenizer) for an llm config: the tokenizer renders prompts at once, while the
    model itself loads only if some answer is not in the cache yet. `runtime`: a step's settings
    that do not change answers: `llm` (memory share, key variable, retries), `llm_cache` (the
    answer cache's file, which the driver passes to every step) and `llm_pool` (the workers
    that serve this model, when the runner started a pool; else this process loads it)."""
    from ctrlrec.llm import backends, registry
    from ctrlrec.llm.cache import CachedLLM, LLMCache
    from ctrlrec.llm.models import llm_source
    from ctrlrec.llm.prompts import PROMPTS_VERSION
    from ctrlrec.paths import llm_cache_path

    path, revision = llm_source(llm["model"], llm.get("tokenizer"))
    identity = {**backends.llm_identity(llm["backend"], llm["model"], llm["dtype"], revision,
                                        llm.get("base_url")),
                "prompts": PROMPTS_VERSION}
    runtime = runtime or {}
    options = registry.backend_options(llm["backend"], {**llm, **runtime.get("llm", {})})
    pool = runtime.get("llm_pool")
    executor = None
    if pool:
        from ..llmpool import PoolExecutor
        executor = PoolExecutor(pool, batch_size=llm.get("batch_size"),
                                caller=runtime.get("llm_caller", ""))
    cached = CachedLLM(lambda: registry.load_backend(llm["backend"], llm["model"], **options),
                       identity, LLMCache(runtime.get("llm_cache") or llm_cache_path()),
                       shard=llm.get("shard_size", 64), executor=executor)
    return cached, backends.template_tokenizer(path)


def llm_stats(cached, n_prompts: int) -> dict:
    out = {"prompts": n_prompts, "llm_calls": cached.calls, "cache_hits": cached.hits,
           "own_seconds": round(cached.own_seconds, 4),  # keys, cache reads, commits
           "backend": {**cached.settings, **cached.identity}}
    work = getattr(cached.executor, "work", None)
    if work is not None:  # served by a pool: its workers' time on this stage's prompts
        out["pool_work"] = {**work, "busy_seconds": round(work["busy_seconds"], 3)}
    return out
