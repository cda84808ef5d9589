"""How the judge grades a feed (shared by the judge stage in evaluate.py and its validation here),
and the validation stage: the judge grades planted feeds that fit each request and feeds that
plainly do not (ctrlrec/judging.py), and the run reports how well it separates them.

Two modes. `feed`: one prompt per feed, the paper's feed-level grade of the whole list. `item`:
the feed's grade is the mean of per-item fit ratings, each asked with the direct scorer's rating
prompt (so a judge that is also the scorer reuses the scorer's cached answers); k prompts per
feed, each distinct (request, item) asked once. Both read the expected 1-5 rating from the digit
probabilities and map it to [0, 1]."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import dataset_info, split_of
from .llm import llm_stats, open_llm

MODES = ("feed", "item")


def grade_feeds(cfg: dict, feeds: list[tuple[str, tuple]], items: pd.DataFrame, words,
                desc: str = "judge") -> tuple[np.ndarray, np.ndarray, dict]:
    """(grade in [0, 1], digit mass, stats) of each feed (request text, item ids). In feed mode
    a grade whose mass is below cfg['mass_threshold'] is NaN; in item mode such item ratings are
    left out of their feed's mean, a feed with none left is NaN, and the mass is the feed's mean."""
    from ctrlrec.llm import backends
    from ctrlrec.llm.prompts import judge_chat, judge_listing, rating_chat
    from ctrlrec.progress import progress

    mode = cfg.get("mode", "feed")
    if mode not in MODES:
        raise ValueError(f"judge mode {mode!r}; allowed: {', '.join(MODES)}")
    cached, tokenizer = open_llm(cfg["llm"], cfg.get("_runtime"))
    text_of = items.set_index("item_id").text
    chat = judge_chat if mode == "feed" else rating_chat
    templates: dict[str, object] = {}

    def template(request: str):
        if request not in templates:
            templates[request] = backends.render(tokenizer, chat(request, words=words))
        return templates[request]

    if mode == "feed":
        asked = feeds
        prompts = [backends.fill(template(r), judge_listing([text_of[i] for i in its]))
                   for r, its in feeds]
    else:
        asked = list(dict.fromkeys((r, i) for r, its in feeds for i in its))
        prompts = [backends.fill(template(r), text_of[i]) for r, i in asked]
    bar = progress(total=len(prompts), desc=desc)
    ratings = cached.rate(prompts, progress_bar=bar)
    bar.close()
    grade = np.array([(x.expected - 1) / 4 for x in ratings], dtype=float)
    mass = np.array([x.mass for x in ratings], dtype=float)
    ok = mass >= cfg["mass_threshold"]
    if mode == "feed":
        grade[~ok] = np.nan
    else:
        at = {a: n for n, a in enumerate(asked)}
        feed_grade, feed_mass = np.full(len(feeds), np.nan), np.full(len(feeds), np.nan)
        for f, (r, its) in enumerate(feeds):
            idx = np.array([at[(r, i)] for i in its], dtype=int)
            if ok[idx].any():
                feed_grade[f] = grade[idx][ok[idx]].mean()
            feed_mass[f] = mass[idx].mean() if len(idx) else np.nan
        grade, mass = feed_grade, feed_mass
    stats = {**llm_stats(cached, len(prompts)), "mode": mode, "feeds_judged": len(feeds),
             "ratings": len(prompts), "low_mass": int((~ok).sum()),
             "low_mass_rate": float((~ok).mean()) if len(ok) else 0.0,
             "feeds_without_grade": int(np.isnan(grade).sum())}
    return grade, mass, stats


def judge_validation_stage(cfg: dict, ds: dict, req: dict) -> dict:
    """The judge (same model, prompt and mode as the judge stage) grades planted feeds of each
    distinct request at each judged k (the first k items of one planted list); returns every
    graded feed and the separation (AUC, mean gap) per k, overall and per target basis."""
    from ctrlrec.judging import MIN_AUC, planted_feeds, separation

    info = dataset_info(ds)
    planted = planted_feeds(req["requests"], split_of(ds), ds["items"], max(cfg["ks"]), info,
                            cfg["planted"], cfg["requests"], cfg["seed"], cfg["history_from"])
    frames = [planted.assign(k=k, items=[list(x[:k]) for x in planted["items"]])
              for k in sorted(cfg["ks"])]
    feeds = pd.concat(frames, ignore_index=True)
    asked = [(t, tuple(x)) for t, x in zip(feeds.text, feeds["items"])]
    grade, mass, stats = grade_feeds(cfg, asked, ds["items"], info.words, desc="judge validation")
    feeds = feeds.assign(judge=grade, judge_mass=mass)
    rows = []
    for k, g in feeds.groupby("k"):
        for basis in ["all", *sorted(set(g.basis))]:
            part = g if basis == "all" else g[g.basis == basis]
            rows.append({"k": int(k), "basis": basis,
                         "requests": int(part.request.nunique()),
                         **separation(part.judge, part.label)})
    return {"feeds": feeds,
            "separation": {"mode": stats["mode"], "min_auc": MIN_AUC, "rows": rows,
                           "requests_planted": int(planted.request.nunique()),
                           "requests_total": int(req["requests"].text.nunique())},
            "stats": stats}
