"""Request generators: one request per evaluated user.

A generator maps (split, items, user ids, seed) to a DataFrame with columns user_id, kind, text,
and for genre requests the requested `genre`. The template generator below is deterministic and
needs no model; LLM generators register under other names (see `GENERATORS`)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .data import REQUEST_GENRES, Split

# How each genre reads inside a sentence.
GENRE_PHRASES = {
    "Drama": "drama", "Comedy": "comedy", "Romance": "romance", "Thriller": "thriller",
    "Action": "action", "Crime": "crime", "Adventure": "adventure", "Children": "children's",
    "Mystery": "mystery", "Sci-Fi": "sci-fi", "Fantasy": "fantasy", "Horror": "horror",
}
TEMPLATES = (
    "I'm in the mood for a {g} movie tonight.",
    "Could you find me a good {g} film to watch next?",
    "I'd like to watch something from the {g} genre.",
    "Show me a {g} movie I would enjoy.",
    "Next I want to see a really good {g} film.",
)


def pick_genres(split: Split, item_genres: pd.DataFrame, user_ids: np.ndarray,
                strategy: str = "lift", min_liked: int = 2) -> np.ndarray:
    """For each user, the request genre their train history points to.

    'lift': the genre over-represented most among the user's liked (rating >= 4) train items
    relative to the catalogue, among genres with at least `min_liked` liked items (else the most
    liked genre). 'top': the genre with the most liked items. Ties go to the earlier genre in
    REQUEST_GENRES, so the choice is deterministic."""
    flags = item_genres.set_index("item_id")[REQUEST_GENRES].astype(float)
    liked = split.train[split.train.rating >= 4]
    if liked.empty:
        liked = split.train
    counts = (flags.loc[liked.item_id].set_axis(liked.user_id.to_numpy())
              .groupby(level=0).sum().reindex(user_ids, fill_value=0.0))
    # Users with no liked items fall back to everything they rated.
    empty = counts.sum(axis=1) == 0
    if empty.any():
        seen = split.train[split.train.user_id.isin(counts.index[empty])]
        counts.loc[empty] = (flags.loc[seen.item_id].set_axis(seen.user_id.to_numpy())
                             .groupby(level=0).sum().reindex(counts.index[empty], fill_value=0.0))
    c = counts.to_numpy()
    if strategy == "top":
        score = c
    elif strategy == "lift":
        share = flags.mean().to_numpy()
        expected = c.sum(axis=1, keepdims=True) * share
        score = np.where(c >= min_liked, c / np.maximum(expected, 1e-9), -1.0)
        no_pick = (score < 0).all(axis=1)
        score[no_pick] = c[no_pick]
    else:
        raise ValueError(f"unknown genre strategy {strategy!r}; allowed: lift, top")
    return np.array(REQUEST_GENRES)[np.argmax(score, axis=1)]


def _template_index(user_id: int, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % len(TEMPLATES)


def template_genre_requests(split: Split, items: pd.DataFrame, user_ids: np.ndarray,
                            seed: int = 0, strategy: str = "lift") -> pd.DataFrame:
    genres = pick_genres(split, items, user_ids, strategy)
    texts = [TEMPLATES[_template_index(int(u), seed)].format(g=GENRE_PHRASES[g])
             for u, g in zip(user_ids, genres)]
    return pd.DataFrame({"user_id": np.asarray(user_ids, dtype=np.int64), "kind": "genre",
                         "genre": genres, "text": texts})


GENERATORS = {"template": template_genre_requests}
