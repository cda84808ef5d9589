"""A lexical baseline: TF-IDF cosine between the request and each item's text.

No model and no training: it shows how far plain word overlap gets (for genre requests, the
genre names in the item text), the floor an embedding or LLM method has to clear. It is also the
worked example of adding a method: this module plus one line in `bench/methods.py`."""

from __future__ import annotations

import numpy as np

# Words that requests use to ask rather than to describe ("I want a movie to watch"): rare in
# item texts, so TF-IDF would weigh them most and match titles like "The Brady Bunch Movie".
REQUEST_WORDS = ["movie", "movies", "film", "films", "want", "watch", "like", "love", "feel",
                 "mood", "something", "tonight", "please", "good", "great", "really", "ve", "ll"]


def tfidf_values(config: dict, ds: dict, req: dict) -> dict:
    """v(u, i, r) = cosine of the TF-IDF vectors of request r and item i (fitted on item texts)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    items = ds["items"].text.tolist()
    stop = sorted(ENGLISH_STOP_WORDS.union(REQUEST_WORDS))
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words=stop).fit(items)
    scores = vectorizer.transform(req["requests"].text) @ vectorizer.transform(items).T
    return {"values": scores.toarray().astype(np.float32)}
