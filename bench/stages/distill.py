"""The distillation stages: LLM-written training requests, teacher labels, the two-tower student."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import dataset_info, evaluated_users, split_of
from .llm import llm_stats, open_llm


def train_requests_stage(cfg: dict, ds: dict | None = None) -> dict:
    """Training requests written by the LLM, `n` per answer as JSONL. Each round writes `parallel`
    batches at once (different seeds), all shown the requests of earlier rounds. Template genre
    requests are removed, so that no evaluation request of the template generator is trained on.
    With `own`, requests of the suite's own kind are added (see `own_kind_requests`). Without a
    dataset input the step is keyed as before datasets were plug-ins: MovieLens-100k."""
    from ctrlrec.data import MOVIELENS
    from ctrlrec.distill import parse_jsonl_requests
    from ctrlrec.llm.backends import render
    from ctrlrec.llm.prompts import train_requests_chat
    from ctrlrec.requests import template_texts

    info = dataset_info(ds) if ds is not None else MOVIELENS
    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime"))
    templates = set(template_texts(info))
    seen: list[str] = []
    rows = []
    rounds = -(-cfg["batches"] // cfg["parallel"])
    for rnd in range(rounds):
        first = rnd * cfg["parallel"]
        batches = range(first, min(first + cfg["parallel"], cfg["batches"]))
        prompts = [render(tokenizer, train_requests_chat(seen[-12:], cfg["per_batch"], b,
                                                         info.words)) for b in batches]
        outs = cached.generate(prompts, max_new_tokens=40 * cfg["per_batch"], temperature=0.9,
                               seed=cfg["seed"] + rnd)
        for b, text in enumerate(outs):
            for r in parse_jsonl_requests(text):
                if r not in seen and r not in templates:
                    seen.append(r)
                    rows.append((r, rnd, b))
    df = pd.DataFrame(rows, columns=["request", "round", "batch"])
    df["kind"] = [request_kind(t, info) for t in df.request]
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
        texts = R.training_genre_requests(own["n"], own["seed"], dataset_info(ds))
    else:
        split = split_of(ds)
        evaluated = set(evaluated_users(split, own["users"], own["seed"]).tolist())
        others = np.array([u for u in split.evaluable_users() if u not in evaluated])
        rng = np.random.default_rng(own["seed"] + 1)
        users = np.sort(rng.choice(others, min(own["n"], len(others)), replace=False))
        df = R.llm_open_requests(cached, lambda chat: render(tokenizer, chat), split, ds["items"],
                                 users, seed=own["seed"], part=own["history_from"],
                                 unique=own["unique"], info=dataset_info(ds))
        texts = df.text[df.source == "llm"].tolist()  # fallbacks are template text: left out
    texts = [t for t in dict.fromkeys(texts) if t not in exclude]
    return pd.DataFrame({"request": texts, "round": -1, "batch": -1,
                         "kind": f"suite_{own['kind']}"})


def request_kind(text: str, info=None) -> str:
    """A coarse label for per-kind distillation checks (genres: those of `info`, MovieLens')."""
    import re
    from ctrlrec.data import MOVIELENS
    from ctrlrec.requests import detect_genres

    if re.search(r"\b(avoid|not|no|without|nothing|don't|isn't)\b", text, re.I):
        return "with_avoid"
    n = len(detect_genres(text, info or MOVIELENS))
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
    untrained = untrained_values(load_encoder(cfg["model"], dtype=cfg["dtype"]),
                                 reqs.request.tolist(), emb["emb"])
    picks = sample_items(untrained, cfg["items_per_request"], cfg["seed"])
    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime"))
    prompts, rows = [], []
    words = dataset_info(ds).words
    for r, (req, kind, items) in enumerate(zip(reqs.request, reqs.kind, picks)):
        tpl = backends.render(tokenizer, rating_chat(req, words=words))
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
