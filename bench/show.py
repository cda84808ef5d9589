"""`bench show`: the paper's qualitative tables (Tables 2-4) for one user and a free-text request.

For each w_control: the top-k items with title, genres, their rank by request score and by
engagement score among the user's candidate items, and the combined score of Eq. 2. The inputs
(dataset, engagement scores, item embeddings, a trained student) come from the stage cache of a
finished run (`--run`, through its manifest's stage keys) or of the default suite
(suites/genre_untrained.yaml); what the untrained method needs is computed and cached when
missing. The value of the request comes from the same stage functions that `bench run` uses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from tabulate import tabulate

from ctrlrec import aggregate
from ctrlrec.data import MOVIELENS, item_name
from ctrlrec.datasets import DataError, DatasetInfo

from .methods import METHODS, llm_free_methods

DEFAULT_SUITE = Path(__file__).resolve().parent.parent / "suites" / "genre_untrained.yaml"


class ShowError(ValueError):
    """Bad input or missing inputs: one line for the user, exit status 2."""


def parse_ws(text: str) -> list[float]:
    try:
        ws = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ShowError(f"--w {text!r}: expected numbers separated by commas, e.g. 0,0.5,1") \
            from None
    if not ws:
        raise ShowError("--w: give at least one value in [0, 1]")
    bad = [w for w in ws if not 0.0 <= w <= 1.0 or np.isnan(w)]
    if bad:
        raise ShowError(f"--w {text!r}: {bad[0]:g} is outside [0, 1]")
    return ws


def qualitative(items: pd.DataFrame, eng: np.ndarray, val: np.ndarray, cand: np.ndarray,
                ws: list[float], k: int, rule: str = "rank",
                info: DatasetInfo = MOVIELENS) -> dict[float, pd.DataFrame]:
    """One user's top-k for each w. `eng`, `val`, `cand`: 1-d arrays over the items (engagement
    score, request value, candidate mask; rows of `items` in the same order). Ranks are positions
    among the candidates (1 = best, ties share the best position); the combined score is the
    rule's score for that w (for `rank`: (1 - w)·e + w·r on ranks normalised to [0, 1])."""
    eng, val, cand = (np.asarray(a)[None, :] for a in (eng, val, cand))
    e, r = aggregate.normalise(rule, eng, val, cand)
    tiebreak = aggregate.rank01(eng, cand)
    req_rank = _positions(val[0], cand[0])
    eng_rank = _positions(eng[0], cand[0])
    categories = list(info.categories)
    flags = items[categories].to_numpy(dtype=bool)
    out = {}
    for w in ws:
        score = aggregate.combine(rule, e, r, w)
        top = aggregate.top_k(score, min(k, int(cand.sum())), tiebreak)[0]
        out[w] = pd.DataFrame({
            "#": np.arange(1, len(top) + 1),
            "title": [item_name(items.title.iloc[i], items.year.iloc[i]) for i in top],
            info.words.categories: [", ".join(g for g, f in zip(categories, flags[i]) if f)
                                    for i in top],
            "request rank": req_rank[top], "engagement rank": eng_rank[top],
            "combined score": score[0, top]})
    return out


def _positions(scores: np.ndarray, cand: np.ndarray) -> np.ndarray:
    pos = np.zeros(len(scores), dtype=int)
    pos[cand] = rankdata(-scores[cand].astype(np.float64), method="min").astype(int)
    return pos


def render(tables: dict[float, pd.DataFrame], header: str) -> str:
    parts = [header, ""]
    for w, df in tables.items():
        parts += [f"### w_control = {w:g}", "",
                  tabulate(df, headers="keys", tablefmt="github", showindex=False,
                           floatfmt=".3f"), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- inputs from the stage cache

def _suite_and_keys(run: str | None, method: str):
    """(suite, plan steps by label, manifest stage keys, cache root, source name)."""
    from ctrlrec.paths import cache_root

    from .plan import build_plan, n_evaluated
    from .seeds import seed_steps
    from .suite import MethodCfg, Suite
    from .suitefile import load_suite

    keys: dict[str, str] = {}
    if run is not None:
        run_dir = Path(run)
        if not run_dir.is_dir():
            raise ShowError(f"--run {run}: no such run folder")
        try:
            manifest = json.loads((run_dir / "manifest.json").read_text())
            suite = Suite.model_validate(manifest["suite"])
        except (OSError, ValueError, KeyError) as exc:
            raise ShowError(f"--run {run}: no readable manifest.json ({type(exc).__name__})") \
                from None
        keys = {label: s["key"] for label, s in manifest.get("stages", {}).items()}
        root = Path(manifest.get("cache_dir") or "")
        if not (manifest.get("cache_dir") and root.is_dir()):
            root = cache_root() / "stages"
        source = f"run {run_dir}"
    else:
        suite = load_suite(DEFAULT_SUITE)
        root = cache_root() / "stages"
        source = f"default suite {DEFAULT_SUITE.name}"
    if method not in {m.name for m in suite.methods}:
        # e.g. distilled on the default suite: the default distillation settings, whose
        # student is shared through the cache by every suite that trains one
        model = next((m.model for m in suite.methods if m.name == "untrained"),
                     MethodCfg(name=method).model)
        suite = suite.model_copy(update={"methods": [*suite.methods,
                                                     MethodCfg(name=method, model=model)]})
    try:
        steps = build_plan(suite, n_evaluated(suite))
    except DataError as exc:
        raise ShowError(f"{source}: data: {exc}") from None
    # a run of several seeds: the first seed's stages, also by their labels without the seed
    seed = suite.seeds[0]
    first = seed_steps(steps, seed)
    plan = {**{s.label: s for s in steps}, **first}
    keys.update({base: keys[s.label] for base, s in first.items() if s.label in keys})
    if len(suite.seeds) > 1:
        source += f", seed {seed}"
    return suite, plan, keys, root, source


def _load(cache, plan: dict, keys: dict, label: str, compute=None):
    """A stage's artefacts: the run's key first, then the plan's; computed (and cached) with
    `compute` when neither is in the cache."""
    step = plan[label]
    for key in dict.fromkeys([keys.get(label), step.key]):
        if key and cache.has(step.stage, key):
            return cache.load(step.stage, key)
    if compute is None:
        return None
    out = compute(step.config)
    cache.save(step.stage, step.key, out, {"label": label, "config": step.config,
                                           "deps": step.deps, "timing": {"by": "bench show"}})
    return out


def show(run: str | None, user: int, request: str, ws: list[float], k: int = 10,
         method: str = "untrained") -> str:
    from .stages import data as stages
    from .cache import StageCache
    from .plan import values_label

    if not request.strip():
        raise ShowError("--request: the request is empty")
    if k < 1:
        raise ShowError(f"--k {k}: must be at least 1")
    suite, plan, keys, root, source = _suite_and_keys(run, method)
    cache = StageCache(root)
    ds = _load(cache, plan, keys, "dataset", stages.dataset_stage)
    split = stages.split_of(ds)
    info = stages.dataset_info(ds)
    if user not in set(split.user_ids.tolist()):
        raise ShowError(f"--user {user}: no such user in {info.name} (ids "
                        f"{split.user_ids.min()}..{split.user_ids.max()})")
    eng = _load(cache, plan, keys, "engagement",
                lambda cfg: stages.engagement_stage(cfg, ds))
    m = next(x for x in suite.methods if x.name == method)
    entry = METHODS[method]
    if "llm" in entry.models:
        raise ShowError(f"--method {method}: only methods that answer a free-text request "
                        f"without LLM calls: {', '.join(llm_free_methods())}")
    req = {"requests": pd.DataFrame({"user_id": [user], "text": [request.strip()],
                                     "genre": [None]})}

    def embeddings(label):
        return _load(cache, plan, keys, label, lambda cfg: stages.item_embeddings_stage(cfg, ds))

    pool_step = plan["pool"]
    emb = embeddings(pool_step.deps[3]) if pool_step.deps[3:] else None  # a shortlist's encoder
    cand = stages.pool_stage(pool_step.config, ds, eng, req, emb)["pool"][0]
    # The method's own function on its own inputs, with this request in place of the suite's.
    step = plan[values_label(method, "none")]
    given = {"dataset": ds, "requests": req, "pool": {"pool": cand[None]}}
    args = []
    for name, dep in zip(entry.inputs, step.deps):
        out = given.get(name) or (embeddings(dep) if name == "item_embeddings"
                                  else _load(cache, plan, keys, dep))
        if out is None:
            raise ShowError(f"no cached {dep} for {source} in {root} (run a suite with the "
                            f"{method} method first, e.g. suites/genre_direct.yaml)")
        args.append(out)
    vals = entry.function()(step.config, *args)
    what = f"{method} ({m.model})"
    row = split.user_index([user])[0]
    rule = suite.aggregation[0]
    tables = qualitative(ds["items"], eng["scores"][row], vals["values"][0], cand, ws, k, rule,
                         info)
    header = (f"## User {user}: \"{request.strip()}\"\n\n"
              f"Method: {what}; engagement: {suite.engagement.model}; aggregation: {rule}; "
              f"{int(cand.sum())} candidate items ({suite.pool.kind}; the user's train items "
              f"excluded); inputs from {source}. Ranks are positions among the candidates "
              f"(1 = best)" + ("; combined score = (1 − w)·e + w·r on ranks normalised to "
                               "[0, 1]." if rule == "rank" else "."))
    return render(tables, header)


def main(args) -> int:
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:  # model-loading progress bars would clutter the table on stderr
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        ws = parse_ws(args.w)
        print(show(args.run, args.user, args.request, ws, args.k, args.method))
    except ShowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        sys.stdout = open(os.devnull, "w")
    return 0
