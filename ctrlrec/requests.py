"""Request generators: one request per evaluated user.

A generator maps (split, items, user ids, seed) to a DataFrame with columns user_id, kind, text,
and for genre requests the requested `genre` (for datasets other than MovieLens, the requested
category: `info` says which categories exist and how they read). The template generator below is
deterministic and needs no model; the LLM writers below need one. A suite picks one by
`requests.generator` (bench/stages/data.py: requests_stage)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .data import GENRE_PHRASES, MOVIELENS, REQUEST_GENRES, Split  # noqa: F401 - re-exported
from .datasets import DatasetInfo
from .leaks import LeakGuard, held_out_titles
from .llm.prompts import MOVIE_WORDS

# MovieLens' evaluation and training phrasings (every dataset's are in its Words, llm/prompts.py);
# the training ones are deliberately unlike TEMPLATES, so no evaluation request is trained on.
TEMPLATES = MOVIE_WORDS.templates
TRAIN_TEMPLATES = MOVIE_WORDS.train_templates


def template_texts(info: DatasetInfo = MOVIELENS, train: bool = False) -> list[str]:
    """Every request the (evaluation or training) templates can write for this dataset."""
    w = info.words
    return [w.fill(t, g=info.phrase(c)) for t in (w.train_templates if train else w.templates)
            for c in info.request_categories]


def training_genre_requests(n: int, seed: int = 0, info: DatasetInfo = MOVIELENS) -> list[str]:
    """n distinct genre requests in the training phrasings (at most phrasings × genres),
    drawn without replacement in a seeded order."""
    texts = template_texts(info, train=True)
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order[:n]]


def pick_genres(split: Split, item_genres: pd.DataFrame, user_ids: np.ndarray,
                strategy: str = "lift", min_liked: int = 2,
                info: DatasetInfo = MOVIELENS) -> np.ndarray:
    """For each user, the request genre their train history points to.

    'lift': the genre over-represented most among the user's liked (rating >= 4) train items
    relative to the catalogue, among genres with at least `min_liked` liked items (else the most
    liked genre). 'top': the genre with the most liked items. Ties go to the earlier genre in
    the dataset's request categories, so the choice is deterministic."""
    allowed = list(info.request_categories)
    flags = item_genres.set_index("item_id")[allowed].astype(float)
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
    return np.array(allowed)[np.argmax(score, axis=1)]


def _template_index(user_id: int, seed: int, n: int) -> int:
    digest = hashlib.sha256(f"{seed}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % n


def template_genre_requests(split: Split, items: pd.DataFrame, user_ids: np.ndarray,
                            seed: int = 0, strategy: str = "lift",
                            info: DatasetInfo = MOVIELENS) -> pd.DataFrame:
    genres = pick_genres(split, items, user_ids, strategy, info=info)
    w = info.words
    texts = [w.fill(w.templates[_template_index(int(u), seed, len(w.templates))],
                    g=info.phrase(g)) for u, g in zip(user_ids, genres)]
    return pd.DataFrame({"user_id": np.asarray(user_ids, dtype=np.int64), "kind": "genre",
                         "genre": genres, "text": texts})


# ---------------------------------------------------------------- LLM-written requests

def detect_genres(text: str, info: DatasetInfo = MOVIELENS) -> list[str]:
    """The request genres (categories) a sentence names (case-insensitive, common spellings)."""
    import re
    return [g for g in info.request_categories if re.search(info.pattern(g), text, flags=re.I)]


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
                       tries: int = 3, part: str = "test", fallback_strategy: str = "lift",
                       info: DatasetInfo = MOVIELENS):
    """One LLM-written genre request per user, validated to name exactly one of the request
    genres (MovieLens: the 12 of method.md; other datasets: their request categories).

    The first try is greedy; later tries sample (seeded). A request naming one of the user's
    test items is a failed try, and the next one forbids those titles (ctrlrec/leaks.py); when
    no try is clean, the first leaking one has its titles replaced. Users whose every try fails
    get the template request; the `source`, `attempts` and `leak` columns record what happened."""
    from .llm.prompts import genre_request_chat

    lines = liked_lines(split, items, part)
    users = [int(u) for u in user_ids]
    guard = LeakGuard(held_out_titles(split, items, users))
    result: dict[int, tuple[str, str, int]] = {}
    pending = users
    for attempt in range(tries):
        params = {"max_new_tokens": 48, "temperature": 0.0 if attempt == 0 else 0.8,
                  "seed": seed + attempt}
        outs = llm.generate([render(genre_request_chat(lines.get(u, []),
                                                       list(info.request_categories), info.words,
                                                       guard.avoid.get(u, ())))
                             for u in pending], **params)
        still = []
        for u, text in zip(pending, outs):
            sentence = text.strip().splitlines()[0].strip().strip('"') if text.strip() else ""
            found = detect_genres(sentence, info)
            if len(found) == 1 and guard.clean(u, sentence):
                result[u] = (sentence, found[0], attempt + 1)
            else:
                still.append(u)
        pending = still
        if not pending:
            break
    for u in [u for u in pending if u in guard.first]:  # titles replaced, if the genre survives
        text, own = guard.scrubbed(u, info.words)
        if own >= 3 and len(detect_genres(text, info)) == 1:
            result[u] = (text, detect_genres(text, info)[0], tries)
            pending.remove(u)
    fallback = template_genre_requests(split, items, np.array(pending, dtype=np.int64), seed,
                                       fallback_strategy, info) if pending else None
    rows = []
    for u in users:
        leak = guard.outcome(u)
        if u in result:
            text, genre, n = result[u]
            rows.append((u, "genre", genre, text, "llm", n, leak))
        else:
            fb = fallback[fallback.user_id == u].iloc[0]
            rows.append((u, "genre", fb.genre, fb.text, "template", tries, leak))
    return pd.DataFrame(rows, columns=["user_id", "kind", "genre", "text", "source", "attempts",
                                       "leak"])


def llm_open_requests(llm, render, split: Split, items: pd.DataFrame, user_ids, seed: int = 0,
                      tries: int = 3, part: str = "test", batch: int = 16, shown: int = 3,
                      unique: bool = True, info: DatasetInfo = MOVIELENS):
    """One open-ended request per user inside <statement> tags. Users are written in batches, each
    shown the last few requests already written (for variety); styles rotate over OPEN_STYLES.
    With `unique`, a request identical to one already written counts as a failed try: small
    models shown earlier requests tend to copy them, and the retries sample instead. So does a
    request naming one of the user's test items (see llm_genre_requests and ctrlrec/leaks.py)."""
    from .llm.prompts import OPEN_STYLES, open_request_chat

    lines = liked_lines(split, items, part)
    users = [int(u) for u in user_ids]
    guard = LeakGuard(held_out_titles(split, items, users))
    genres = dict(zip(users, pick_genres(split, items, np.array(users), "lift", info=info)))
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
            outs = llm.generate([render(open_request_chat(lines.get(u, []), style[u], earlier,
                                                          info.words, guard.avoid.get(u, ())))
                                 for u in pending], **params)
            still = []
            taken = set(written) | {t for t, _ in got.values()}
            for u, text in zip(pending, outs):
                sentence = parse_statement(text)
                if sentence and 3 <= len(sentence.split()) <= 60 and not (
                        unique and sentence in taken) and guard.clean(u, sentence):
                    got[u] = (sentence, attempt + 1)
                    taken.add(sentence)
                else:
                    still.append(u)
            pending = still
            if not pending:
                break
        for u in pending:  # no clean try, but one named a test item: it, titles replaced
            if u in guard.first and guard.scrubbed(u, info.words)[1] >= 3:
                got[u] = (guard.scrubbed(u, info.words)[0], tries)
        for u in chunk:
            leak = guard.outcome(u)
            if u in got:
                rows.append((u, "open_ended", None, got[u][0], "llm", got[u][1], style[u], leak))
            else:  # a plain request from the user's favourite genre keeps the run going
                text = f"Something {info.phrase(genres[u])} and really well made, please."
                rows.append((u, "open_ended", None, text, "template", tries, style[u], leak))
            written.append(rows[-1][3])
    return pd.DataFrame(rows, columns=["user_id", "kind", "genre", "text", "source", "attempts",
                                       "style", "leak"])
