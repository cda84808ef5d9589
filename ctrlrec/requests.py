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

# Phrasings for *training* requests of the genre kind (the distilled method's `own_requests`):
# deliberately unlike TEMPLATES, so no evaluation request is ever trained on.
TRAIN_TEMPLATES = (
    "Recommend a {g} picture for this evening.",
    "What {g} titles should I queue up?",
    "Put some {g} films at the top of my list.",
    "I feel like {g} today; any suggestions?",
    "My friends want {g}. What should we pick?",
    "Give me your best {g} recommendations.",
)


def training_genre_requests(n: int, seed: int = 0) -> list[str]:
    """n distinct genre requests in the training phrasings (at most phrasings × genres),
    drawn without replacement in a seeded order."""
    texts = [t.format(g=p) for t in TRAIN_TEMPLATES for p in GENRE_PHRASES.values()]
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order[:n]]


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


# ---------------------------------------------------------------- LLM-written requests

_GENRE_PATTERNS = {
    "Drama": r"\bdrama(s|tic)?\b", "Comedy": r"\bcomed(y|ies)\b", "Romance": r"\bromance|romantic\b",
    "Thriller": r"\bthrillers?\b", "Action": r"\baction\b", "Crime": r"\bcrime\b",
    "Adventure": r"\badventures?\b", "Children": r"\bchildren'?s?\b|\bkids?\b|\bfamily\b",
    "Mystery": r"\bmyster(y|ies)\b", "Sci-Fi": r"\bsci-?fi\b|\bscience[- ]fiction\b",
    "Fantasy": r"\bfantasy\b", "Horror": r"\bhorror\b",
}


def detect_genres(text: str) -> list[str]:
    """The request genres a sentence names (case-insensitive, common spellings)."""
    import re
    return [g for g, pat in _GENRE_PATTERNS.items() if re.search(pat, text, flags=re.I)]


def parse_statement(text: str) -> str | None:
    """The first sentence between <statement> tags, or None when the answer has none."""
    import re
    m = re.search(r"<statement>\s*(.+?)\s*(</statement>|$)", text, flags=re.S | re.I)
    body = m.group(1).strip() if m else ""
    if not body:
        return None
    first = re.split(r"(?<=[.!?])\s+", body.splitlines()[0].strip().strip('"'))[0]
    return first or None


def liked_lines(split: Split, items: pd.DataFrame, part: str = "test", n: int = 15) -> dict:
    """Per user, up to n movies they rated highest in `part` ('Title (year): r/5').

    The paper writes requests that agree with what the user goes on to watch, so by default the
    generator sees the test half (the items the engagement metrics are computed on)."""
    from .data import rating_lines

    df = split.test if part == "test" else split.train
    top = df.sort_values(["user_id", "rating", "timestamp"], ascending=[True, False, False])
    return rating_lines(top.groupby("user_id").head(n), items)


def llm_genre_requests(llm, render, split: Split, items: pd.DataFrame, user_ids, seed: int = 0,
                       tries: int = 3, part: str = "test", fallback_strategy: str = "lift"):
    """One LLM-written genre request per user, validated to name exactly one of the 12 genres.

    The first try is greedy; later tries sample (seeded). Users whose every try fails get the
    template request; the `source` and `attempts` columns record what happened."""
    from .llm.prompts import genre_request_chat

    lines = liked_lines(split, items, part)
    users = [int(u) for u in user_ids]
    prompts = {u: render(genre_request_chat(lines.get(u, []), REQUEST_GENRES)) for u in users}
    result: dict[int, tuple[str, str, int]] = {}
    pending = users
    for attempt in range(tries):
        params = {"max_new_tokens": 48, "temperature": 0.0 if attempt == 0 else 0.8,
                  "seed": seed + attempt}
        outs = llm.generate([prompts[u] for u in pending], **params)
        still = []
        for u, text in zip(pending, outs):
            sentence = text.strip().splitlines()[0].strip().strip('"') if text.strip() else ""
            found = detect_genres(sentence)
            if len(found) == 1:
                result[u] = (sentence, found[0], attempt + 1)
            else:
                still.append(u)
        pending = still
        if not pending:
            break
    fallback = template_genre_requests(split, items, np.array(pending, dtype=np.int64), seed,
                                       fallback_strategy) if pending else None
    rows = []
    for u in users:
        if u in result:
            text, genre, n = result[u]
            rows.append((u, "genre", genre, text, "llm", n))
        else:
            fb = fallback[fallback.user_id == u].iloc[0]
            rows.append((u, "genre", fb.genre, fb.text, "template", tries))
    return pd.DataFrame(rows, columns=["user_id", "kind", "genre", "text", "source", "attempts"])


def llm_open_requests(llm, render, split: Split, items: pd.DataFrame, user_ids, seed: int = 0,
                      tries: int = 3, part: str = "test", batch: int = 16, shown: int = 3,
                      unique: bool = True):
    """One open-ended request per user inside <statement> tags. Users are written in batches, each
    shown the last few requests already written (for variety); styles rotate over OPEN_STYLES.
    With `unique`, a request identical to one already written counts as a failed try: small
    models shown earlier requests tend to copy them, and the retries sample instead."""
    from .llm.prompts import OPEN_STYLES, open_request_chat

    lines = liked_lines(split, items, part)
    users = [int(u) for u in user_ids]
    genres = dict(zip(users, pick_genres(split, items, np.array(users), "lift")))
    written: list[str] = []
    rows = []
    for lo in range(0, len(users), batch):
        chunk = users[lo:lo + batch]
        style = {u: OPEN_STYLES[(lo + j) % len(OPEN_STYLES)] for j, u in enumerate(chunk)}
        earlier = written[-shown:]
        got: dict[int, tuple[str, int]] = {}
        pending = chunk
        for attempt in range(tries):
            params = {"max_new_tokens": 64, "temperature": 0.0 if attempt == 0 else 0.8,
                      "seed": seed + attempt}
            outs = llm.generate([render(open_request_chat(lines.get(u, []), style[u], earlier))
                                 for u in pending], **params)
            still = []
            taken = set(written) | {t for t, _ in got.values()}
            for u, text in zip(pending, outs):
                sentence = parse_statement(text)
                if sentence and 3 <= len(sentence.split()) <= 60 and not (
                        unique and sentence in taken):
                    got[u] = (sentence, attempt + 1)
                    taken.add(sentence)
                else:
                    still.append(u)
            pending = still
            if not pending:
                break
        for u in chunk:
            if u in got:
                rows.append((u, "open_ended", None, got[u][0], "llm", got[u][1], style[u]))
            else:  # a plain request from the user's favourite genre keeps the run going
                text = f"Something {GENRE_PHRASES[genres[u]]} and really well made, please."
                rows.append((u, "open_ended", None, text, "template", tries, style[u]))
            written.append(rows[-1][3])
    return pd.DataFrame(rows, columns=["user_id", "kind", "genre", "text", "source", "attempts",
                                       "style"])
