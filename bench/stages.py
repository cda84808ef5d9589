"""The stages of `bench run`. Each is a pure function of its config and its inputs' artefacts
(dicts of arrays, DataFrames and JSON-able values) and returns its own artefacts; the runner caches
them and carries them between Ray tasks."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ctrlrec import aggregate, metrics
from ctrlrec.data import ML_GENRES, Split, chronological_split, item_texts, load_movielens
from ctrlrec.engagement import BiVAEConfig, popularity_scores, train_bivae

# Bump a stage's version when its code changes what it computes: old cache entries then miss.
VERSIONS = {"dataset": 1, "engagement": 1, "item_embeddings": 1, "requests": 3, "values": 1,
            "pool": 1, "sweep": 2, "judge": 1, "train_requests": 1, "teacher_labels": 1,
            "student": 1}
ENGAGEMENT_KS = (5, 10)


def split_of(ds: dict) -> Split:
    s = ds["split"]
    return Split(user_ids=np.asarray(s["user_ids"]), item_ids=np.asarray(s["item_ids"]),
                 train=ds["train"], test=ds["test"], meta=s["meta"])


def dataset_stage(cfg: dict) -> dict:
    ml = load_movielens(cfg["path"])
    split = chronological_split(ml.ratings, cfg["split"]["train_fraction"])
    texts = item_texts(ml.items)
    if cfg["items"]["text"] == "summary":  # each item's profile is cached in the LLM cache
        from ctrlrec.data import summarised_texts
        from ctrlrec.llm.backends import render

        cached, tokenizer = open_llm(cfg["items"]["llm"], cfg["_runtime"]["llm"])
        texts = summarised_texts(cached, lambda c: render(tokenizer, c), texts,
                                 cfg["items"]["summary_tokens"])
    items = ml.items.assign(text=texts)
    return {"train": split.train, "test": split.test, "items": items,
            "split": {"user_ids": split.user_ids.tolist(), "item_ids": split.item_ids.tolist(),
                      "meta": split.meta, "source": ml.source}}


def engagement_stage(cfg: dict, ds: dict) -> dict:
    """The base recommender's scores, plus its and popularity's ranking quality on the test half."""
    split = split_of(ds)
    out = {}
    pop = popularity_scores(split)
    if cfg["model"] == "bivae":
        bcfg = BiVAEConfig(k=cfg["k"], encoder=tuple(cfg["encoder"]), act_fn=cfg["act_fn"],
                           likelihood=cfg["likelihood"], epochs=cfg["epochs"],
                           batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"],
                           seed=cfg["seed"])
        _, scores = train_bivae(split, bcfg)  # the scores are what later stages use
    else:
        scores = pop
    candidates = ~split.matrix("train")
    test = split.matrix("test")
    out["scores"] = scores.astype(np.float32)
    out["metrics"] = {name: ranking_quality(s, candidates, test)
                      for name, s in ((cfg["model"], scores), ("popularity", pop))}
    return out


def ranking_quality(scores, candidates, relevant) -> dict:
    top = aggregate.top_k(np.where(candidates, scores, np.nan), max(ENGAGEMENT_KS),
                          aggregate.rank01(scores, candidates))
    out = {}
    for k in ENGAGEMENT_KS:
        for name, fn in (("precision", metrics.precision_at_k), ("recall", metrics.recall_at_k),
                         ("ndcg", metrics.ndcg_at_k)):
            out[f"{name}@{k}"] = metrics.mean_se(fn(top[:, :k], relevant))
    return out


def item_embeddings_stage(cfg: dict, ds: dict) -> dict:
    from ctrlrec.embeddings import encode, load_encoder

    encoder = load_encoder(cfg["model"])
    return {"emb": encode(encoder, ds["items"].text.tolist(), desc="item embeddings")}


def evaluated_users(user_ids: np.ndarray, users, seed: int) -> np.ndarray:
    """All users, or a seeded sample of `users` of them (sorted, so rows keep id order)."""
    if users == "all" or users >= len(user_ids):
        return np.asarray(user_ids)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(user_ids, size=users, replace=False))


def requests_stage(cfg: dict, ds: dict) -> dict:
    from ctrlrec import requests as R

    split = split_of(ds)
    users = evaluated_users(split.user_ids, cfg["users"], cfg["seed"])
    if cfg["generator"] == "template":
        df = R.template_genre_requests(split, ds["items"], users, seed=cfg["seed"],
                                       strategy=cfg["genre_strategy"])
        return {"requests": df.assign(source="template", attempts=1)}
    from ctrlrec.llm.backends import render

    cached, tokenizer = open_llm(cfg["llm"], cfg["_runtime"]["llm"])
    draw = lambda chat: render(tokenizer, chat)  # noqa: E731
    if cfg["kind"] == "genre":
        df = R.llm_genre_requests(cached, draw, split, ds["items"], users, seed=cfg["seed"],
                                  part=cfg["history_from"])
    else:
        df = R.llm_open_requests(cached, draw, split, ds["items"], users, seed=cfg["seed"],
                                 part=cfg["history_from"], unique=cfg.get("unique", True))
    return {"requests": df, "stats": {**llm_stats(cached, len(users)),
                                      "fallbacks": int((df.source != "llm").sum())}}


def untrained_values_stage(cfg: dict, emb: dict, req: dict) -> dict:
    from ctrlrec.embeddings import load_encoder
    from ctrlrec.values import untrained_values

    encoder = load_encoder(cfg["model"])
    return {"values": untrained_values(encoder, req["requests"].text.tolist(), emb["emb"])}


def pool_stage(cfg: dict, ds: dict, eng: dict, req: dict, emb: dict | None = None) -> dict:
    """The candidate items of each evaluated user (rows in request order), frozen for all methods."""
    split = split_of(ds)
    rows = split.user_index(req["requests"].user_id)
    candidates = ~split.matrix("train")[rows]
    if cfg["kind"] == "all":
        return {"pool": candidates}
    sources = [(eng["scores"][rows], cfg["engagement"])]
    if cfg["untrained"]:
        from ctrlrec.embeddings import load_encoder
        from ctrlrec.values import untrained_values

        sources.append((untrained_values(load_encoder(cfg["model"]),
                                         req["requests"].text.tolist(), emb["emb"]),
                        cfg["untrained"]))
    pool = np.zeros_like(candidates)
    for scores, n in sources:
        if n:
            top = aggregate.top_k(np.where(candidates, scores, np.nan), n)
            np.put_along_axis(pool, top, True, axis=1)
    return {"pool": pool & candidates}


def history_lines(split: Split, items: pd.DataFrame, n: int) -> dict[int, list[str]]:
    """Each user's n most recent train ratings as 'Title (year): r/5', newest first."""
    from ctrlrec.data import rating_lines

    recent = split.train.sort_values(["user_id", "timestamp", "item_id"]).groupby("user_id").tail(n)
    return rating_lines(recent.iloc[::-1], items)


def open_llm(llm: dict, runtime: dict | None = None):
    """(CachedLLM, tokenizer) for an llm config: the tokenizer renders prompts at once, while the
    model itself loads only if some answer is not in the cache yet. `runtime` holds settings that
    do not change answers (memory share, key variable)."""
    from transformers import AutoTokenizer

    from ctrlrec.llm import backends
    from ctrlrec.llm.cache import CachedLLM, LLMCache
    from ctrlrec.llm.models import resolve_llm
    from ctrlrec.llm.prompts import PROMPTS_VERSION
    from ctrlrec.paths import llm_cache_path

    path = resolve_llm(llm.get("tokenizer") or llm["model"])
    identity = {"backend": llm["backend"], "model": llm["model"], "dtype": llm["dtype"],
                "revision": backends.model_revision(path), "prompts": PROMPTS_VERSION}
    if llm["backend"] == "openai":
        identity["base_url"] = llm["base_url"]
    options = {k: v for k, v in {**llm, **(runtime or {})}.items()
               if k not in ("backend", "model", "tokenizer")}
    cached = CachedLLM(lambda: backends.load_backend(llm["backend"], llm["model"], **options),
                       identity, LLMCache(llm_cache_path()))
    return cached, AutoTokenizer.from_pretrained(path)


def llm_stats(cached, n_prompts: int) -> dict:
    return {"prompts": n_prompts, "llm_calls": cached.calls, "cache_hits": cached.hits,
            "backend": cached.backend.settings if cached.calls else cached.identity}


def direct_values_stage(cfg: dict, ds: dict, req: dict, pool: dict) -> dict:
    """v = the LLM's expected 1-5 rating of each pooled item for the user's request.

    Ratings whose probability mass on the five digits is below `mass_threshold` are counted and,
    by policy, scored 1.0 (the lowest rating): the model did not understand the task for that
    item, so the request signal must not promote it; engagement can still recommend it."""
    from ctrlrec.llm import backends
    from ctrlrec.llm.prompts import rating_chat
    from ctrlrec.progress import progress

    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime", {}).get("llm"))
    split = split_of(ds)
    requests = req["requests"]
    ctx = cfg["context"]
    history = history_lines(split, ds["items"], int(ctx.split(":")[1])) if ctx != "none" else {}
    texts = ds["items"].text.to_numpy()
    prompts, where = [], []
    for row, (uid, text) in enumerate(zip(requests.user_id, requests.text)):
        tpl = backends.render(tokenizer, rating_chat(text, history.get(int(uid), [])))
        cols = np.flatnonzero(pool["pool"][row])
        prompts += [backends.fill(tpl, texts[c]) for c in cols]
        where += [(row, c) for c in cols]
    bar = progress(total=len(prompts), desc=f"direct scoring ({ctx})")
    ratings = cached.rate(prompts, progress_bar=bar)
    bar.close()
    values = np.full(pool["pool"].shape, np.nan, dtype=np.float32)
    mass = np.full(pool["pool"].shape, np.nan, dtype=np.float32)
    for (r, c), rating in zip(where, ratings):
        values[r, c] = rating.expected
        mass[r, c] = rating.mass
    low = mass < cfg["mass_threshold"]
    values[low] = 1.0
    return {"values": values, "mass": mass,
            "stats": {**llm_stats(cached, len(prompts)), "low_mass": int(low.sum()),
                      "low_mass_rate": float(low.sum() / max(len(prompts), 1)),
                      "mean_mass": float(np.nanmean(mass)) if prompts else None}}


def sweep_stage(cfg: dict, ds: dict, eng: dict, vals: dict, req: dict, pool: dict) -> dict:
    """Rank-aggregate and score one slice of users for every w and k (cfg['rows'] picks the slice)."""
    t0 = time.perf_counter()
    split = split_of(ds)
    lo, hi = cfg["rows"]
    requests = req["requests"].iloc[lo:hi]
    rows = split.user_index(requests.user_id)
    candidates = pool["pool"][lo:hi]
    test = split.matrix("test")[rows]
    genre_flags = ds["items"][ML_GENRES].to_numpy(dtype=bool)
    has_genre = requests.genre.notna().to_numpy()
    requested = np.array([ML_GENRES.index(g) if isinstance(g, str) else 0 for g in requests.genre])
    ws, ks = cfg["ws"], sorted(cfg["ks"])
    tops = aggregate.sweep(cfg["aggregation"], eng["scores"][rows], vals["values"][lo:hi],
                           candidates, ws, max(ks))
    frames = []
    for wi, w in enumerate(ws):
        for k in ks:
            top = tops[wi][:, :k]
            frames.append(pd.DataFrame({
                "user_id": requests.user_id.to_numpy(), "w_control": w, "k": k,
                "genre_accuracy": np.where(
                    has_genre, metrics.genre_accuracy_at_k(top, genre_flags, requested), np.nan),
                "precision": metrics.precision_at_k(top, test),
                "recall": metrics.recall_at_k(top, test),
                "ndcg": metrics.ndcg_at_k(top, test),
            }))
    item_ids = split.item_ids[tops]  # (w, users, kmax)
    return {"per_user": pd.concat(frames, ignore_index=True),
            "recs": item_ids.astype(np.int32),
            "timing": {"seconds": time.perf_counter() - t0}}



def judge_stage(cfg: dict, ds: dict, req: dict, *sweeps: dict) -> dict:
    """Feed-level judge: an LLM grades each top-k list against the request (1-5, expected rating
    from the digit probabilities), normalised to [0, 1]. Each distinct (user, feed) is judged once,
    however many w values, methods or contexts produce it. Grades whose digit mass is below
    `mass_threshold` are kept out of the averages and counted."""
    from ctrlrec.llm import backends
    from ctrlrec.llm.prompts import judge_chat, judge_listing
    from ctrlrec.progress import progress

    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime", {}).get("llm"))
    requests = req["requests"].reset_index(drop=True)
    texts = ds["items"].set_index("item_id").text
    templates = [backends.render(tokenizer, judge_chat(t)) for t in requests.text]
    ws_all = cfg["sweep_ws"]
    judged_w = [i for i, w in enumerate(ws_all) if cfg["ws"] is None or w in cfg["ws"]]
    feeds: dict[tuple, int] = {}
    rows = []
    for (method, ctx, agg, lo, hi), out in zip(cfg["sweeps"], sweeps):
        recs = out["recs"]
        for wi in judged_w:
            for k in cfg["ks"]:
                for r in range(hi - lo):
                    feed = (lo + r, tuple(int(i) for i in recs[wi, r, :k]))
                    idx = feeds.setdefault(feed, len(feeds))
                    rows.append((method, ctx, agg, int(requests.user_id[lo + r]), ws_all[wi], k, idx))
    prompts = [backends.fill(templates[row], judge_listing([texts[i] for i in items]))
               for row, items in feeds]
    bar = progress(total=len(prompts), desc="judge")
    ratings = cached.rate(prompts, progress_bar=bar)
    bar.close()
    grade = np.array([(r.expected - 1) / 4 for r in ratings])
    mass = np.array([r.mass for r in ratings])
    ok = mass >= cfg["mass_threshold"]
    df = pd.DataFrame(rows, columns=["method", "context", "aggregation", "user_id", "w_control",
                                     "k", "feed"])
    df["judge"] = np.where(ok, grade, np.nan)[df.feed]
    df["judge_mass"] = mass[df.feed]
    return {"per_user": df.drop(columns="feed"),
            "stats": {**llm_stats(cached, len(prompts)), "feeds_judged": len(prompts),
                      "cells_x_users": len(df), "low_mass": int((~ok).sum()),
                      "low_mass_rate": float((~ok).mean()) if len(ok) else 0.0}}


# ---------------------------------------------------------------- distillation

def train_requests_stage(cfg: dict, ds: dict | None = None) -> dict:
    """Training requests written by the LLM, `n` per answer as JSONL. Each round writes `parallel`
    batches at once (different seeds), all shown the requests of earlier rounds. Template genre
    requests are removed, so that no evaluation request of the template generator is trained on.
    With `own`, requests of the suite's own kind are added (see `own_kind_requests`)."""
    from ctrlrec.distill import parse_jsonl_requests
    from ctrlrec.llm.backends import render
    from ctrlrec.llm.prompts import train_requests_chat
    from ctrlrec.requests import GENRE_PHRASES, TEMPLATES

    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime", {}).get("llm"))
    templates = {t.format(g=p) for t in TEMPLATES for p in GENRE_PHRASES.values()}
    seen: list[str] = []
    rows = []
    rounds = -(-cfg["batches"] // cfg["parallel"])
    for rnd in range(rounds):
        first = rnd * cfg["parallel"]
        batches = range(first, min(first + cfg["parallel"], cfg["batches"]))
        prompts = [render(tokenizer, train_requests_chat(seen[-12:], cfg["per_batch"], b))
                   for b in batches]
        outs = cached.generate(prompts, max_new_tokens=40 * cfg["per_batch"], temperature=0.9,
                               seed=cfg["seed"] + rnd)
        for b, text in enumerate(outs):
            for r in parse_jsonl_requests(text):
                if r not in seen and r not in templates:
                    seen.append(r)
                    rows.append((r, rnd, b))
    df = pd.DataFrame(rows, columns=["request", "round", "batch"])
    df["kind"] = [request_kind(t) for t in df.request]
    stats = llm_stats(cached, cfg["batches"])
    if cfg.get("own"):
        own = own_kind_requests(cfg["own"], ds, cached, tokenizer, exclude=set(seen) | templates)
        df = pd.concat([df, own], ignore_index=True)
        stats["own_requests"] = len(own)
    return {"train_requests": df, "stats": stats}


def own_kind_requests(own: dict, ds: dict, cached, tokenizer, exclude: set) -> pd.DataFrame:
    """Training requests of the suite's own kind, kept apart from the evaluation requests: genre
    requests in the training phrasings (never the evaluation templates), or open-ended requests
    that the LLM writes for users outside the evaluated set. Marked `suite_<kind>` for the
    per-kind check."""
    from ctrlrec import requests as R
    from ctrlrec.llm.backends import render

    if own["kind"] == "genre":
        texts = R.training_genre_requests(own["n"], own["seed"])
    else:
        split = split_of(ds)
        evaluated = set(evaluated_users(split.user_ids, own["users"], own["seed"]).tolist())
        others = np.array([u for u in split.user_ids if u not in evaluated])
        rng = np.random.default_rng(own["seed"] + 1)
        users = np.sort(rng.choice(others, min(own["n"], len(others)), replace=False))
        df = R.llm_open_requests(cached, lambda chat: render(tokenizer, chat), split, ds["items"],
                                 users, seed=own["seed"], part=own["history_from"],
                                 unique=own["unique"])
        texts = df.text[df.source == "llm"].tolist()  # fallbacks are template text: left out
    texts = [t for t in dict.fromkeys(texts) if t not in exclude]
    return pd.DataFrame({"request": texts, "round": -1, "batch": -1,
                         "kind": f"suite_{own['kind']}"})


def request_kind(text: str) -> str:
    """A coarse label for per-kind distillation checks."""
    import re
    from ctrlrec.requests import detect_genres

    if re.search(r"\b(avoid|not|no|without|nothing|don't|isn't)\b", text, re.I):
        return "with_avoid"
    n = len(detect_genres(text))
    return "one_genre" if n == 1 else ("multi_genre" if n > 1 else "descriptive")


def teacher_labels_stage(cfg: dict, ds: dict, train_req: dict, emb: dict) -> dict:
    """Direct-LLM ratings of sampled (training request, item) pairs, with the mass check."""
    from ctrlrec.distill import sample_items
    from ctrlrec.embeddings import load_encoder
    from ctrlrec.llm import backends
    from ctrlrec.llm.prompts import rating_chat
    from ctrlrec.progress import progress
    from ctrlrec.values import untrained_values

    reqs = train_req["train_requests"]
    texts = ds["items"].text.to_numpy()
    untrained = untrained_values(load_encoder(cfg["model"]), reqs.request.tolist(), emb["emb"])
    picks = sample_items(untrained, cfg["items_per_request"], cfg["seed"])
    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime", {}).get("llm"))
    prompts, rows = [], []
    for r, (req, kind, items) in enumerate(zip(reqs.request, reqs.kind, picks)):
        tpl = backends.render(tokenizer, rating_chat(req))
        for rank, i in enumerate(items):
            prompts.append(backends.fill(tpl, texts[i]))
            rows.append((req, kind, int(ds["items"].item_id.iloc[i]), texts[i],
                         "top" if rank < cfg["items_per_request"] // 2 else "uniform"))
    bar = progress(total=len(prompts), desc="teacher labels")
    ratings = cached.rate(prompts, progress_bar=bar)
    bar.close()
    df = pd.DataFrame(rows, columns=["request", "kind", "item_id", "item_text", "sampled"])
    df["label"] = [(x.expected - 1) / 4 for x in ratings]
    df["mass"] = [x.mass for x in ratings]
    low = df.mass < cfg["mass_threshold"]
    return {"labels": df, "stats": {**llm_stats(cached, len(prompts)), "low_mass": int(low.sum()),
                                    "low_mass_rate": float(low.mean())}}


def student_stage(cfg: dict, ds: dict, labels: dict) -> dict:
    """Fine-tune the two towers on the teacher labels; hold out whole requests for the check."""
    from ctrlrec.distill import TrainConfig, TwoTower, correlations, predict_pairs, train
    from ctrlrec.embeddings import needs_remote_code, resolve_model

    df = labels["labels"]
    df = df[df.mass >= cfg["mass_threshold"]]
    reqs = np.sort(df.request.unique())
    if len(reqs) < 2:
        raise ValueError(f"distillation needs teacher labels for at least 2 requests, got "
                         f"{len(reqs)} (did the LLM write any parseable training requests?)")
    rng = np.random.default_rng(cfg["seed"])
    val = set(rng.choice(reqs, size=max(1, int(len(reqs) * cfg["val_fraction"])), replace=False))
    is_val = df.request.isin(val)
    import torch

    towers = TwoTower(resolve_model(cfg["model"]),
                      device="cuda" if torch.cuda.is_available() else "cpu",
                      trust_remote_code=needs_remote_code(cfg["model"]))
    before = predict_pairs(towers, df[is_val])
    tcfg = TrainConfig(epochs=cfg["epochs"], lr=cfg["lr"], rank_loss=cfg["rank_loss"],
                       seed=cfg["seed"])
    history = train(towers, df[~is_val], tcfg)
    check = df[is_val][["request", "kind", "item_id", "label"]].assign(
        untrained=before, student=predict_pairs(towers, df[is_val]))
    summary = {"overall": correlations(check.student, check.label),
               "untrained_overall": correlations(check.untrained, check.label),
               "per_kind": {k: correlations(g.student, g.label) for k, g in check.groupby("kind")},
               "train_requests": int(len(reqs) - len(val)), "val_requests": len(val),
               "train_pairs": int((~is_val).sum()), "val_pairs": int(is_val.sum()),
               "history": history}
    return {"towers": towers.state_bytes(), "item_emb": towers.embed_items(ds["items"].text.tolist()),
            "check": check, "split": pd.DataFrame({"request": reqs, "val": np.isin(reqs, list(val))}),
            "summary": summary}


def distilled_values_stage(cfg: dict, student: dict, req: dict, split_info: dict | None = None) -> dict:
    """v = f(r)·g(i): one request embedding per request and one matrix product; no LLM call."""
    from ctrlrec.distill import TwoTower
    from ctrlrec.embeddings import needs_remote_code, resolve_model

    towers = TwoTower(resolve_model(cfg["model"]),
                      trust_remote_code=needs_remote_code(cfg["model"])).load_bytes(student["towers"])
    texts = req["requests"].text.tolist()
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    values = (towers.embed_requests(list(unique)) @ student["item_emb"].T)[inverse]
    trained_on = set(student["split"].request)
    return {"values": values.astype(np.float32),
            "stats": {"llm_calls": 0, "eval_requests_seen_in_training":
                      int(sum(t in trained_on for t in unique))}}
