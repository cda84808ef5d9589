import numpy as np
import pytest

from ctrlrec.data import REQUEST_GENRES, item_texts
from ctrlrec.requests import GENRE_PHRASES, pick_genres, template_genre_requests


def test_genre_requests_are_deterministic_and_name_one_of_the_12(movielens, split):
    users = split.user_ids[:200]
    a = template_genre_requests(split, movielens.items, users, seed=0)
    b = template_genre_requests(split, movielens.items, users, seed=0)
    assert a.equals(b)
    assert set(a.genre) <= set(REQUEST_GENRES) and len(set(a.genre)) >= 5
    for g, text in zip(a.genre, a.text):
        assert GENRE_PHRASES[g] in text
        others = [p for x, p in GENRE_PHRASES.items() if x != g and p not in GENRE_PHRASES[g]]
        assert not any(f" {p} " in f" {text} " for p in others)


def test_lift_picks_an_over_represented_genre_top_picks_the_most_liked(movielens, split):
    users = split.user_ids
    top = pick_genres(split, movielens.items, users, "top")
    lift = pick_genres(split, movielens.items, users, "lift")
    assert (top == "Drama").mean() > 0.5      # drama dominates raw counts
    assert (lift == "Drama").mean() < 0.2     # lift spreads requests over genres
    # the lift choice is a genre the user liked at least twice
    liked = split.train[(split.train.rating >= 4) & (split.train.user_id == users[0])]
    flags = movielens.items.set_index("item_id").loc[liked.item_id, lift[0]]
    assert flags.sum() >= 2


@pytest.mark.slow
def test_untrained_values_rank_matching_items_higher(movielens):
    from ctrlrec.embeddings import encode, load_encoder
    from ctrlrec.values import untrained_values

    enc = load_encoder("all-MiniLM-L6-v2")
    items = movielens.items.head(300)  # enough horror and children's films, a fifth of the cost
    emb = encode(enc, item_texts(items))
    assert emb.shape == (300, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    v = untrained_values(enc, ["I'm in the mood for a horror movie tonight.",
                               "Show me a children's movie I would enjoy.",
                               "I'm in the mood for a horror movie tonight."], emb)
    assert v.shape == (3, 300)
    np.testing.assert_array_equal(v[0], v[2])
    horror, kids = items.Horror.to_numpy(), items.Children.to_numpy()
    assert v[0][horror].mean() > v[0][kids].mean() + 0.05
    assert v[1][kids].mean() > v[1][horror].mean() + 0.05


def test_missing_packaged_model_gets_a_clear_error(monkeypatch):
    from ctrlrec import embeddings
    monkeypatch.setitem(embeddings.PACKAGED, "nope", ("nope-pkg", "nope_module", "f"))
    with pytest.raises(RuntimeError, match="pip install nope-pkg"):
        embeddings.resolve_model("nope")


def test_training_genre_requests_never_match_the_evaluation_templates():
    from ctrlrec.requests import GENRE_PHRASES, TEMPLATES, training_genre_requests
    evaluation = {t.format(g=p) for t in TEMPLATES for p in GENRE_PHRASES.values()}
    texts = training_genre_requests(500, seed=3)
    assert len(texts) == len(set(texts)) == 72       # 6 phrasings × 12 genres, no more
    assert not set(texts) & evaluation
    assert training_genre_requests(10, seed=3) == texts[:10]


def test_split_package_joins_parts_in_order_and_checks_the_digest(tmp_path, monkeypatch):
    """The assembler over installed parts (modules exposing get_part_path), built here."""
    import hashlib
    import sys

    from ctrlrec.packaged import PackageError, SplitPackage, assemble
    chunks = [b"first-", b"second-", b"third"]
    for i, data in enumerate(chunks, 1):
        pkg = tmp_path / f"tinyparts_{i}"
        pkg.mkdir()
        (pkg / "part.bin").write_bytes(data)
        (pkg / "__init__.py").write_text(
            "from pathlib import Path\n"
            "def get_part_path():\n    return Path(__file__).with_name('part.bin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    spec = SplitPackage("tinyparts-{i}", "0", 3, digest[:16], "", "tiny")
    assemble(spec, tmp_path / "out" / "joined.bin")
    assert (tmp_path / "out" / "joined.bin").read_bytes() == b"first-second-third"
    bad = SplitPackage("tinyparts-{i}", "0", 3, "0" * 16, "", "tiny")
    with pytest.raises(PackageError, match="sha256"):
        assemble(bad, tmp_path / "out" / "bad.bin")
    assert not (tmp_path / "out" / "bad.bin").exists()
    for i in range(1, 4):
        sys.modules.pop(f"tinyparts_{i}", None)
