"""Datasets as plug-ins: the generic `folder` dataset (ratings.csv + items.csv) read, checked and
run end to end, and its one-line errors."""

import importlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from ctrlrec.datasets import DATASETS, DataError, load_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = ["Folk", "Jazz", "Rock", "Techno"]


def write_folder(folder, n_users=30, n_items=60, seed=0):
    """A small catalogue of albums: each user likes one category and rates mostly its items, the
    lower-numbered items of a category are the popular ones; timestamps grow per user."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = 1000 + 3 * np.arange(n_items)  # neither 1-based nor contiguous
    main = np.arange(n_items) % len(CATEGORIES)
    cats = ["|".join([CATEGORIES[m]] + ([CATEGORIES[(m + 1) % 4]] if i % 7 == 0 else []))
            for i, m in enumerate(main)]
    pd.DataFrame({"item_id": ids, "title": [f"Album {i}" for i in range(n_items)],
                  "categories": cats,
                  "description": [f"Record number {i}." for i in range(n_items)]}
                 ).to_csv(folder / "items.csv", index=False)
    rows = []
    for u in range(1, n_users + 1):
        fav = u % len(CATEGORIES)
        own, other = np.flatnonzero(main == fav), np.flatnonzero(main != fav)
        weights = 1.0 / (1 + np.arange(len(own)))
        picks = list(rng.choice(own, 12, replace=False, p=weights / weights.sum()))
        picks += list(rng.choice(other, 4, replace=False))
        t = 1_000_000 + u * 1000
        for j in rng.permutation(len(picks)):
            i = picks[j]
            t += int(rng.integers(1, 100))
            rows.append((u, ids[i], int(rng.integers(4, 6)) if main[i] == fav
                         else int(rng.integers(1, 4)), t))
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        folder / "ratings.csv", index=False)
    return folder


def suite_text(folder, extra=""):
    return (f"name: albums\nusers: all\n"
            f"data: {{dataset: folder, path: '{folder}', item_noun: album}}\n"
            f"engagement: {{model: popularity}}\n"
            f"methods: [{{name: untrained, model: all-MiniLM-L6-v2}}]\n"
            f"w_control: [0.0, 1.0]\nk: [5]\n{extra}")


def test_folder_dataset_loads_with_its_categories_and_noun(tmp_path):
    d = load_dataset("folder", str(write_folder(tmp_path / "albums")), item_noun="album")
    assert d.info.categories == tuple(CATEGORIES) == d.info.request_categories
    assert d.ratings.user_id.nunique() == 30 and len(d.items) == 60
    assert d.ratings.dtypes.tolist() == [np.int64] * 4
    assert d.items.item_id.is_monotonic_increasing and d.items.year.isna().all()
    first = d.items.iloc[0]  # item 0: Folk, and (0 % 7 == 0) also Jazz
    assert first.Folk and first.Jazz and not first.Rock and first.description == "Record number 0."
    assert d.category_matrix.sum() == 60 + 9
    from ctrlrec.data import item_texts
    assert item_texts(d.items, d.info)[0] == "Album 0. Categories: Folk, Jazz. Record number 0."
    some = load_dataset("folder", str(tmp_path / "albums"), request_categories=["Rock", "Jazz"])
    assert some.info.request_categories == ("Rock", "Jazz") and some.info.item_noun == "item"


def test_prompts_and_requests_speak_of_the_datasets_items(tmp_path):
    from ctrlrec.data import MOVIELENS
    from ctrlrec.llm.prompts import genre_request_chat, rating_chat
    from ctrlrec.requests import detect_genres, template_texts

    info = load_dataset("folder", str(write_folder(tmp_path / "a")), item_noun="album").info
    chat = rating_chat("some jazz", ["Album 3: 5/5"], info.words)
    assert "an album recommender" in chat.system and "movie" not in chat.system + chat.user
    assert "Albums this user rated most recently" in chat.user
    ask = genre_request_chat([], list(info.request_categories), info.words)
    assert "Folk, Jazz, Rock, Techno" in ask.system and "exactly one category" in ask.system
    texts = template_texts(info)
    assert len(texts) == 5 * 4 and not any("movie" in t or "film" in t for t in texts)
    assert detect_genres("Some jazz albums, please", info) == ["Jazz"]
    assert detect_genres("A jazzy record", info) == []  # whole names only
    assert "movie" in rating_chat("x", words=MOVIELENS.words).system  # MovieLens keeps its own


BAD = {  # file -> (content, words the one-line message must hold)
    "missing column": ("ratings.csv", "user_id,item_id,rating\n1,1000,5\n",
                       ["ratings.csv", "'timestamp'", "required"]),
    "extra column": ("ratings.csv", "user_id,item_id,rating,timestamp,x\n1,1000,5,1,2\n",
                     ["ratings.csv", "'x'", "allowed: user_id, item_id, rating, timestamp"]),
    "text rating": ("ratings.csv", "user_id,item_id,rating,timestamp\n1,1000,5,1\n2,1000,good,2\n",
                    ["ratings.csv: line 3", "rating 'good'", "allowed: numbers from 0 to 5"]),
    "rating too high": ("ratings.csv", "user_id,item_id,rating,timestamp\n1,1000,7,1\n",
                        ["line 2", "rating '7'", "0 to 5"]),
    "fractional id": ("ratings.csv", "user_id,item_id,rating,timestamp\n1.5,1000,4,1\n",
                      ["line 2", "user_id '1.5'", "whole numbers"]),
    "repeated pair": ("ratings.csv", "user_id,item_id,rating,timestamp\n1,1000,4,1\n1,1000,3,2\n",
                      ["line 3", "a second time", "one rating per user and item"]),
    "unknown item": ("ratings.csv", "user_id,item_id,rating,timestamp\n1,7,4,1\n",
                     ["ratings.csv: line 2", "item_id 7 is not in items.csv"]),
    "empty category": ("items.csv", "item_id,title,categories\n1000,A,Jazz||Rock\n",
                       ["items.csv: line 2", "categories 'Jazz||Rock'", "non-empty names"]),
    "reserved category": ("items.csv", "item_id,title,categories\n1000,A,title\n",
                          ["items.csv: line 2", "'title'", "none of item_id, title"]),
    "repeated item": ("items.csv", "item_id,title,categories\n1000,A,Jazz\n1000,B,Rock\n",
                      ["items.csv: line 3", "item_id 1000", "each item_id once"]),
    "empty title": ("items.csv", "item_id,title,categories\n1000,,Jazz\n",
                    ["items.csv: line 2", "title is empty"]),
    "no categories at all": ("items.csv", "item_id,title,categories\n1000,A,\n",
                             ["items.csv", "at least one item with a category"]),
    "not utf-8": ("items.csv", b"item_id,title,categories\n1000,\xff\xfe,Jazz\n",
                  ["items.csv", "not UTF-8"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_folder_errors_are_one_line_naming_file_column_value(tmp_path, case):
    name, content, words = BAD[case]
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "ratings.csv").write_text("user_id,item_id,rating,timestamp\n1,1000,4,1\n")
    (folder / "items.csv").write_text("item_id,title,categories\n1000,A,Jazz\n")
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        (folder / name).write_text(content)
    with pytest.raises(DataError) as err:
        load_dataset("folder", str(folder))
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_suite_checks_of_the_data_section(tmp_path):
    from bench.checks import preflight
    from bench.suitefile import SuiteError, load_suite

    def load(text):
        f = tmp_path / "s.yaml"
        f.write_text(text)
        return load_suite(f)

    base = "name: x\nmethods: [{name: untrained}]\n"
    for data, words in (("{dataset: folder}", ["data", "needs path", "ratings.csv"]),
                        ("{dataset: foldr, path: /x}", ["unknown dataset 'foldr'",
                                                        "did you mean 'folder'"]),
                        ("{item_noun: album}", ["item_noun is not a setting of the ml-100k"])):
        with pytest.raises(SuiteError) as err:
            load(base + f"data: {data}\n")
        assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)
    folder = write_folder(tmp_path / "ok")
    (folder / "items.csv").write_text("item_id,title,categories\n1000,A,Jazz\n")
    with pytest.raises(SuiteError) as err:  # the run would stop here, before Ray starts
        preflight(load(suite_text(folder)), "s.yaml")
    assert str(err.value).startswith("s.yaml: ") and "is not in items.csv" in str(err.value)


def test_a_folder_key_follows_the_files_and_ml100k_keys_hold(tmp_path):
    from bench.plan import build_plan, n_evaluated
    from bench.suitefile import load_suite

    folder = write_folder(tmp_path / "albums")
    (tmp_path / "s.yaml").write_text(suite_text(folder))
    suite = load_suite(tmp_path / "s.yaml")
    assert n_evaluated(suite) == 30
    before = build_plan(suite, 30)[0]
    assert before.label == "dataset" and set(before.config["files"]) == {"ratings.csv", "items.csv"}
    with open(folder / "ratings.csv", "a") as f:  # user 32, with one rating, has no test half
        f.write("31,1000,5,99999999\n31,1003,4,99999999\n32,1000,5,99999999\n")
    assert build_plan(suite, 31)[0].key != before.key and n_evaluated(suite) == 31
    ml = load_suite(os.path.join(REPO, "suites", "smoke.yaml"))
    cfg = build_plan(ml, n_evaluated(ml))[0].config
    assert set(cfg) == {"dataset", "path", "split", "items"}  # as before datasets were plug-ins
    assert DATASETS["ml-100k"].impl().fetch and DATASETS["folder"].impl().fetch() is None


def run_in_process(tmp_path, text):
    """The plan's own steps, in order, on this process (no Ray), written as a run folder."""
    from bench.outputs import write_run
    from bench.plan import build_plan, n_evaluated
    from bench.runner import RunResult
    from bench.suitefile import load_suite

    (tmp_path / "s.yaml").write_text(text)
    suite = load_suite(tmp_path / "s.yaml")
    plan = build_plan(suite, n_evaluated(suite))
    out = {}
    for step in plan:
        module, name = step.fn.split(":")
        fn = getattr(importlib.import_module(module), name)
        out[step.label] = fn(step.config, *[out[d] for d in step.deps])
    run = tmp_path / "out" / "albums" / "r"
    run.mkdir(parents=True)
    (tmp_path / "cache").mkdir()  # where `bench show` caches what it computes
    write_run(run, suite, plan, RunResult(outputs=out),
              {"run_id": "r", "cache_dir": str(tmp_path / "cache")}, 1.0)
    return out, run


@pytest.mark.slow  # ~10 s: MiniLM over the albums, the report and its plots
def test_folder_suite_runs_through_every_stage_to_a_report_and_bench_show(tmp_path):
    """The plan's own steps, in order, on this process (no Ray: `bench run` through Ray is
    tested on MovieLens in tests/test_run.py): category accuracy rises with w_control and
    precision stays a fraction; then the run folder, its report, and `bench show` on it."""
    from bench.show import show

    out, run = run_in_process(tmp_path, suite_text(write_folder(tmp_path / "albums")))
    assert out["dataset"]["info"]["item_noun"] == "album"
    req = out["requests"]["requests"]
    assert set(req.genre) <= set(CATEGORIES) and req.text.str.contains("album").any()
    per_user = pd.concat([o["per_user"] for label, o in out.items() if label.startswith("sweep")])
    mean = per_user.groupby("w_control")[["genre_accuracy", "precision"]].mean()
    assert mean.loc[1.0, "genre_accuracy"] >= 0.8 > mean.loc[0.0, "genre_accuracy"]
    assert mean.precision.between(0, 1).all() and mean.loc[0.0, "precision"] > 0

    cells = pd.read_parquet(run / "cells.parquet")
    acc = cells[cells.metric == "genre_accuracy"].set_index("w_control")["mean"]
    assert acc[1.0] >= 0.8 > acc[0.0] and (cells.n_users == 30).all()
    assert json.loads((run / "manifest.json").read_text())["data_source"] == "folder"
    assert "album" in (run / "summary.md").read_text().lower()
    text = show(str(run), 3, "some techno please", [1.0], k=3)
    assert "| categories" in text and text.count("Techno") >= 3


@pytest.mark.slow  # ~10 s, as above
def test_a_global_time_split_evaluates_only_users_on_both_sides_of_its_cutoff(tmp_path):
    """Users 1-3 rated before everyone else, 28-30 after; the other 24 rated in turns, so one
    cutoff at half of all ratings leaves each of them 8 train and 8 test ratings. Only those 24
    get a request and count in the cells; the manifest and the report say which split ran."""
    folder = write_folder(tmp_path / "albums")
    r = pd.read_csv(folder / "ratings.csv")
    turn, u = r.groupby("user_id").cumcount(), r.user_id
    r["timestamp"] = np.where(u <= 3, u * 100 + turn, np.where(
        u >= 28, 10**7 + u * 100 + turn, 10**6 + turn * 1000 + u))
    r.to_csv(folder / "ratings.csv", index=False)
    out, run = run_in_process(tmp_path, suite_text(
        folder, "").replace("item_noun: album}", "item_noun: album, split: {kind: global_time}}"))
    assert out["requests"]["requests"].user_id.tolist() == list(range(4, 28))
    cells = pd.read_parquet(run / "cells.parquet")
    assert (cells.n_users == 24).all()
    split = json.loads((run / "manifest.json").read_text())["split"]
    assert split["kind"] == "global_time" and split["evaluable_users"] == 24
    assert split["train_ratings"] == 3 * 16 + 24 * 8 and split["test_ratings"] == 240
    assert "split at one time for all users" in (run / "summary.md").read_text()
    from bench.plan import n_evaluated
    from bench.suitefile import load_suite
    assert n_evaluated(load_suite(tmp_path / "s.yaml")) == 24  # the plan knows it beforehand
