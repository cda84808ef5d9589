"""Judge validation (ctrlrec/judging.py, bench/stages/judge.py): planted feeds fit or plainly miss
their request, the AUC and gap on hand-checked grades, item mode as the mean of per-item
ratings (tiny random Qwen2), the validation stage end to end, and the report's warning."""

import numpy as np
import pandas as pd
import pytest

from ctrlrec.data import ML_GENRES
from ctrlrec.judging import MIN_AUC, planted_feeds, related_categories, separation

TINY_LLM = {"backend": "hf", "dtype": "float32", "batch_size": 4, "threads": 1,
            "prefix_reuse": True}


def genres_of(items: pd.DataFrame, ids) -> list[set[str]]:
    rows = items.set_index("item_id").loc[list(ids), ML_GENRES]
    return [{g for g in ML_GENRES if r[g]} for _, r in rows.iterrows()]


def test_planted_feeds_fit_or_plainly_miss(movielens, split):
    items = movielens.items
    users = split.user_ids[:4]
    req = pd.DataFrame({
        "user_id": users, "genre": ["Thriller", "Comedy", None, None],
        "text": ["I'd like a thriller movie.", "Show me a comedy.",
                 "Something romantic and full of action tonight.",
                 "A slow, beautiful film about growing older."]})
    feeds = planted_feeds(req, split, items, k=5, per_request=2, seed=3)
    assert len(feeds) == 4 * 2 * 2 and (feeds["items"].map(len) == 5).all()
    assert list(feeds.basis.unique()) == ["requested", "named", "history"]
    assert feeds.targets[feeds.request == 2].iloc[0] == "Romance|Action"
    flags = items[ML_GENRES].to_numpy(dtype=bool)
    for _, f in feeds.iterrows():
        targets = set(f.targets.split("|"))
        carried = genres_of(items, f["items"])
        if f.label == 1:  # two targets: some item carries both, every one carries one
            assert all(g & targets for g in carried), (f.text, carried)
            assert len(targets) == 1 or all(targets <= g for g in carried)
        else:  # no target and nothing that co-occurs with one above chance
            banned = related_categories(flags, ML_GENRES, sorted(targets))
            assert "Crime" in banned if "Thriller" in targets else True
            assert all(g and not g & banned for g in carried), (f.text, carried)
    # seeded: the same feeds again; another seed, other feeds; a cap keeps that many requests
    again = planted_feeds(req, split, items, k=5, per_request=2, seed=3)
    assert again["items"].tolist() == feeds["items"].tolist()
    other = planted_feeds(req, split, items, k=5, per_request=2, seed=4)
    assert other["items"].tolist() != feeds["items"].tolist()
    assert planted_feeds(req, split, items, k=5, max_requests=2).request.nunique() == 2


def test_history_basis_is_the_liked_genre_of_the_half_the_writer_saw(movielens, split):
    import dataclasses

    from ctrlrec.requests import pick_genres

    users = split.user_ids[10:13]
    req = pd.DataFrame({"user_id": users, "text": [f"Surprise me, please ({u})." for u in users]})
    feeds = planted_feeds(req, split, movielens.items, k=3)
    seen = dataclasses.replace(split, train=split.test)
    expected = pick_genres(seen, movielens.items, users, "lift")
    assert feeds[feeds.label == 1].targets.tolist() == list(expected)
    train = planted_feeds(req, split, movielens.items, k=3, part="train")
    assert train[train.label == 1].targets.tolist() == \
        list(pick_genres(split, movielens.items, users, "lift"))


def test_auc_and_gap_on_a_constructed_case():
    grades = [0.9, 0.8, 0.5, np.nan, 0.5, 0.2, 0.1]
    labels = [1, 1, 1, 1, 0, 0, 0]
    s = separation(grades, labels)
    # pairs won by the fitting feed: 3 + 3 + (one tie: 0.5, two wins) = 8.5 of 9
    assert s["auc"] == pytest.approx(8.5 / 9)
    assert s["gap"] == pytest.approx(2.2 / 3 - 0.8 / 3)
    assert (s["n_pos"], s["n_neg"], s["ungraded"]) == (3, 3, 1)
    assert separation([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])["auc"] == 0.0
    assert separation([0.6] * 4, [1, 0, 1, 0])["auc"] == 0.5
    assert np.isnan(separation([0.6, np.nan], [1, 0])["auc"])


@pytest.mark.slow
def test_item_mode_is_the_mean_of_item_ratings(tiny_model_dir, movielens, tmp_path, monkeypatch):
    from bench.stages.judge import grade_feeds
    from ctrlrec.llm import backends
    from ctrlrec.llm.backends import HFBackend
    from ctrlrec.llm.cache import CachedLLM, LLMCache
    from ctrlrec.llm.prompts import MOVIE_WORDS, rating_chat

    monkeypatch.setenv("CTRLREC_LLM_CACHE", str(tmp_path / "j.sqlite"))
    items = movielens.items.assign(text=movielens.items.title)
    feeds = [("a comedy", (1, 2, 3)), ("a comedy", (2, 4)), ("a horror film", (1, 5))]
    cfg = {"llm": {**TINY_LLM, "model": str(tiny_model_dir)}, "mode": "item",
           "mass_threshold": 0.0}
    grade, mass, stats = grade_feeds(cfg, feeds, items, MOVIE_WORDS)
    assert stats["ratings"] == stats["llm_calls"] == 6  # (comedy: 1, 2, 3, 4), (horror: 1, 5)
    # the same ratings asked one by one, outside the judge
    backend = HFBackend(str(tiny_model_dir), dtype="float32", batch_size=1, threads=1)
    llm = CachedLLM(lambda: backend, backend.identity, LLMCache(tmp_path / "own.sqlite"))
    text_of = items.set_index("item_id").text

    def one(request, item):
        tpl = backends.render(backend.tokenizer, rating_chat(request))
        return llm.rate([backends.fill(tpl, text_of[item])])[0]

    own = {(r, i): one(r, i) for r, its in feeds for i in its}
    for f, (r, its) in enumerate(feeds):
        assert grade[f] == pytest.approx(np.mean([(own[r, i].expected - 1) / 4 for i in its]),
                                         abs=1e-3)
        assert mass[f] == pytest.approx(np.mean([own[r, i].mass for i in its]), abs=1e-3)
    # an item below the mass threshold leaves its feed's mean; a feed with none left: no grade
    masses = {key: x.mass for key, x in own.items()}
    low = sorted(masses.values())
    cut = (low[2] + low[3]) / 2  # three above, three below (far from float noise)
    grade2, _, stats2 = grade_feeds({**cfg, "mass_threshold": cut}, feeds, items, MOVIE_WORDS)
    for f, (r, its) in enumerate(feeds):
        kept = [(own[r, i].expected - 1) / 4 for i in its if masses[r, i] >= cut]
        assert (np.isnan(grade2[f]) and not kept) or grade2[f] == pytest.approx(np.mean(kept),
                                                                                abs=1e-3)
    assert stats2["low_mass"] == 3 and stats2["llm_calls"] == 0  # all from the cache


@pytest.mark.slow
def test_validation_stage_grades_planted_feeds(tiny_model_dir, movielens, split, tmp_path,
                                               monkeypatch):
    from bench.stages.judge import judge_validation_stage

    monkeypatch.setenv("CTRLREC_LLM_CACHE", str(tmp_path / "v.sqlite"))
    ds = {"train": split.train, "test": split.test,
          "items": movielens.items.assign(text=movielens.items.title),
          "split": {"user_ids": split.user_ids.tolist(), "item_ids": split.item_ids.tolist(),
                    "meta": split.meta}}
    req = {"requests": pd.DataFrame({"user_id": split.user_ids[:3],
                                     "genre": ["Horror", "Horror", "Drama"],
                                     "text": ["A horror film.", "A horror film.", "A drama."]})}
    cfg = {"llm": {**TINY_LLM, "model": str(tiny_model_dir)}, "mode": "feed", "ks": [2, 3],
           "mass_threshold": 0.0, "planted": 1, "requests": None, "seed": 0,
           "history_from": "test"}
    out = judge_validation_stage(cfg, ds, req)
    feeds = out["feeds"]
    # two distinct requests × (fitting, unfitting) × two k, the k=2 lists the k=3 lists' start
    assert len(feeds) == 8 and out["stats"]["llm_calls"] == 8
    short, long_ = feeds[feeds.k == 2], feeds[feeds.k == 3]
    assert [x[:2] for x in long_["items"]] == list(short["items"])
    rows = out["separation"]["rows"]
    assert [(r["k"], r["basis"]) for r in rows] == [(2, "all"), (2, "requested"), (3, "all"),
                                                     (3, "requested")]
    assert all(r["n_pos"] == r["n_neg"] == 2 and 0 <= r["auc"] <= 1 for r in rows)


def report_manifest(auc: float | None, judge: bool = True) -> dict:
    rows = [] if auc is None else [
        {"k": 5, "basis": "all", "requests": 40, "n_pos": 40, "n_neg": 40, "ungraded": 0,
         "auc": auc, "gap": 0.02, "mean_pos": 0.7, "mean_neg": 0.68, "p_value": 0.3}]
    return {"suite": {"name": "t", "judge": {"k": [5]} if judge else None},
            "judge_validation": None if auc is None else
            {"mode": "feed", "min_auc": MIN_AUC, "rows": rows, "requests_planted": 40,
             "requests_total": 60}}


def test_report_warns_when_the_judge_does_not_separate():
    from bench.report import render, sections

    low = report_manifest(0.61)
    notes = sections.warnings(low)[1]
    assert notes[0].startswith("Judge validation failed at k=5") and "0.610 < 0.8" in notes[0]
    doc = sections.Report("t", [], [sections.warnings_section(low),
                                    sections.judge_validation_section(low)])
    md = render.markdown(doc)
    assert "**Judge validation failed at k=5" in md
    header = next(line for line in md.splitlines() if "fitting lists" in line)
    assert "AUC" in header and "| 0.610 |" in md.split(header)[1]
    assert "Judge validation failed" in render.html_page(doc)
    assert not [n for n in sections.warnings(report_manifest(0.93))[1] if "Judge" in n]
    assert "not validated" in sections.warnings(report_manifest(None))[1][0]
    assert sections.warnings(report_manifest(None, judge=False))[1] == []
    assert sections.judge_validation_section(report_manifest(None)) is None
    same = {**report_manifest(0.93), "judge_is_scorer": True}
    same["suite"]["judge"]["mode"] = "item"
    assert any("direct scorer's own prompt" in n for n in sections.warnings(same)[1])


def test_plan_validates_the_judge_unless_told_not_to(tmp_path):
    from bench.plan import build_plan
    from bench.suitefile import load_suite

    suite = load_suite("suites/open_ended.yaml")
    steps = {s.label: s for s in build_plan(suite, 60)}
    v = steps["judge_validation"]
    assert v.deps == ["dataset", "requests"] and v.llm is not None
    assert v.config["mode"] == steps["judge"].config["mode"] == "feed"
    item = {s.label: s for s in build_plan(load_suite("suites/open_ended.yaml",
                                                      ["judge.mode=item"]), 60)}
    assert item["judge"].key != steps["judge"].key
    assert item["judge_validation"].key != v.key
    off = load_suite("suites/open_ended.yaml", ["judge.validate=false"])
    assert off.model_dump(mode="json")["judge"]["validate"] is False
    assert "judge_validation" not in {s.label for s in build_plan(off, 60)}
