"""Stages that prepare a run: the dataset and its split, the engagement model, item embeddings,
the requests, and the frozen candidate pool."""

from __future__ import annotations

import numpy as np

from ctrlrec import aggregate, metrics
from ctrlrec.data import MOVIELENS, Split, item_texts, split_ratings
from ctrlrec.datasets import DatasetInfo, dataset_entry, load_dataset
from ctrlrec.engagement import BiVAEConfig, popularity_scores, train_bivae, train_cornac

from .llm import llm_stats, open_llm


ENGAGEMENT_KS = (5, 10)


def split_of(ds: dict) -> Split:
    s = ds["split"]
    return Split(user_ids=np.asarray(s["user_ids"]), item_ids=np.asarray(s["item_ids"]),
                 train=ds["train"], test=ds["test"], meta=s["meta"])


def dataset_info(ds: dict) -> DatasetInfo:
    """The dataset's categories, request categories and item noun. Entries cached before datasets
    were plug-ins have none: they are MovieLens-100k, the only dataset then."""
    return DatasetInfo.from_json(ds["info"]) if "info" in ds else MOVIELENS


def dataset_stage(cfg: dict) -> dict:
    options = {k: cfg[k] for k in dataset_entry(cfg["dataset"]).options if k in cfg}
    data = load_dataset(cfg["dataset"], cfg["path"], **options)
    split = split_ratings(data.ratings, cfg["split"]["kind"], cfg["split"]["train_fraction"],
                          item_ids=data.items.item_id.to_numpy())
    texts = item_texts(data.items, data.info)
    if cfg["items"]["text"] == "summary":  # each item's profile is cached in the LLM cache
        from ctrlrec.data import summarised_texts
        from ctrlrec.llm.backends import render

        cached, tokenizer = open_llm(cfg["items"]["llm"], cfg["_runtime"])
        texts = summarised_texts(cached, lambda c: render(tokenizer, c), texts,
                                 cfg["items"]["summary_tokens"], data.info.words)
    items = data.items.assign(text=texts)
    return {"train": split.train, "test": split.test, "items": items,
            "split": {"user_ids": split.user_ids.tolist(), "item_ids": split.item_ids.tolist(),
                      "meta": split.meta, "source": data.source},
            "info": data.info.to_json()}


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
    elif cfg["model"] == "popularity":
        scores = pop
    else:  # any other cornac model, through its own fit() and score()
        _, scores = train_cornac(split, cfg["model"], cfg["params"], cfg["seed"])
    rows = split.user_index(split.evaluable_users())  # a user with no test item scores 0
    candidates = ~split.matrix("train")[rows]
    test = split.matrix("test")[rows]
    out["scores"] = scores.astype(np.float32)
    out["metrics"] = {name: ranking_quality(s[rows], candidates, test)
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

    encoder = load_encoder(cfg["model"], dtype=cfg.get("dtype", "float32"))
    return {"emb": encode(encoder, ds["items"].text.tolist(), desc="item embeddings")}


def evaluated_users(split: Split, users, seed: int) -> np.ndarray:
    """All evaluable users (a train and a test rating each), or a seeded sample of `users` of
    them (sorted, so rows keep id order)."""
    user_ids = split.evaluable_users()
    if users == "all" or users >= len(user_ids):
        return np.asarray(user_ids)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(user_ids, size=users, replace=False))


def requests_stage(cfg: dict, ds: dict) -> dict:
    from ctrlrec import requests as R

    split = split_of(ds)
    users = evaluated_users(split, cfg["users"], cfg["seed"])
    if cfg["generator"] == "template":
        df = R.template_genre_requests(split, ds["items"], users, seed=cfg["seed"],
                                       strategy=cfg["genre_strategy"], info=dataset_info(ds))
        return {"requests": df.assign(source="template", attempts=1)}
    from ctrlrec.llm.backends import render

    cached, tokenizer = open_llm(cfg["llm"], cfg["_runtime"])
    draw = lambda chat: render(tokenizer, chat)  # noqa: E731
    if cfg["kind"] == "genre":
        df = R.llm_genre_requests(cached, draw, split, ds["items"], users, seed=cfg["seed"],
                                  part=cfg["history_from"], info=dataset_info(ds))
    else:
        df = R.llm_open_requests(cached, draw, split, ds["items"], users, seed=cfg["seed"],
                                 part=cfg["history_from"], unique=cfg.get("unique", True),
                                 info=dataset_info(ds))
    from ctrlrec.leaks import leak_stats
    return {"requests": df, "stats": {**llm_stats(cached, len(users)),
                                      "fallbacks": int((df.source != "llm").sum()),
                                      "leaks": leak_stats(df)}}  # requests naming a test item


def pool_stage(cfg: dict, ds: dict, eng: dict, req: dict, emb: dict | None = None) -> dict:
    """The candidate items of each evaluated user (rows in request order), frozen for all methods.
    A shortlist also records who nominated each candidate: `nominated` holds bit j set when
    nominator `nominators[j]` (of bench.suite.NOMINATORS) put the item forward."""
    from ..suite import NOMINATORS

    split = split_of(ds)
    rows = split.user_index(req["requests"].user_id)
    candidates = ~split.matrix("train")[rows]
    if cfg["kind"] == "all":
        return {"pool": candidates}
    nominated = np.zeros(candidates.shape, dtype=np.uint8)
    for bit, name in enumerate(NOMINATORS):
        n = cfg.get(name, 0)
        if not n:
            continue
        if name == "random":  # the same sample whatever the methods: seeded by suite and user
            chosen = np.zeros_like(candidates)
            for r, uid in enumerate(req["requests"].user_id):
                rng = np.random.default_rng([cfg["seed"] % 2**64, int(uid)])
                cols = np.flatnonzero(candidates[r])
                chosen[r, rng.choice(cols, size=min(n, len(cols)), replace=False)] = True
        elif name == "per_category":
            chosen = candidates & _per_category(ds, cfg["seed"], n)
        else:
            chosen = _top_n(_nominator_scores(name, cfg, eng, req, emb, rows), candidates, n)
        nominated[chosen] |= np.uint8(1 << bit)
    return {"pool": nominated > 0, "nominated": nominated, "nominators": list(NOMINATORS)}


def _per_category(ds: dict, seed: int, n: int) -> np.ndarray:
    """Items mask: n items drawn uniformly from each request category in turn (an item already
    drawn for an earlier category is not drawn again), seeded by the suite seed alone, so every
    user gets the same sample (less what they rated in train) and users who share a request
    share its LLM prompts. It reads only the catalogue's category flags, no method's model."""
    categories = list(dataset_info(ds).request_categories)
    flags = ds["items"][categories].to_numpy(dtype=bool)
    rng = np.random.default_rng([seed % 2**64, len(categories), n])
    picked = np.zeros(len(flags), dtype=bool)
    for j in range(len(categories)):
        cols = np.flatnonzero(flags[:, j] & ~picked)
        picked[rng.choice(cols, size=min(n, len(cols)), replace=False)] = True
    return picked


def _nominator_scores(name: str, cfg: dict, eng: dict, req: dict, emb: dict | None,
                      rows: np.ndarray) -> np.ndarray:
    if name == "engagement":
        return eng["scores"][rows]
    from ctrlrec.embeddings import load_encoder
    from ctrlrec.values import untrained_values

    return untrained_values(load_encoder(cfg["model"], dtype=cfg["dtype"]),
                            req["requests"].text.tolist(), emb["emb"])


def _top_n(scores: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """users × items mask of each user's n best-scored candidates (all of them, where fewer)."""
    mask = candidates.copy()
    full = candidates.sum(axis=1) > n  # top_k refuses a row holding fewer than n candidates
    if full.any():
        top = aggregate.top_k(np.where(candidates[full], scores[full], np.nan), n)
        picked = np.zeros((int(full.sum()), candidates.shape[1]), dtype=bool)
        np.put_along_axis(picked, top, True, axis=1)
        mask[full] = picked
    return mask
