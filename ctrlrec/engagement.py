"""Engagement predictors f_eng(u, i): cornac's BiVAE (the paper's), a popularity baseline, and
any cornac model that learns from the rating matrix alone, by name.

All return a dense users × items float32 score matrix aligned with a `Split`. Items that never
occur in the train half are unknown to cornac's models; they get a score below every known item so
that the base recommender ranks them last (they stay candidates: request scores can still lift
them)."""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np

from .data import Split
from .hardware import torch_threads
from .progress import progress

# The two models of the first version; their configs keep their flat keys (and cache keys).
LEGACY_MODELS = ("bivae", "popularity")
# cornac models that train and score from user-item ratings alone (cornac 3.0). The rest of
# cornac.models need side information (text, images, graphs, sentiment, views), wrap another model
# (the ANN indexes), score sequences (next-item/basket), or fail with today's numpy (COE, FM).
CORNAC_MODELS = (
    "BaselineOnly", "BiVAECF", "BPR", "EASE", "GCMC", "GlobalAvg", "GMF", "HPF", "IBPR", "ItemKNN",
    "LightGCN", "MF", "MLP", "MMMF", "MostPop", "NeuMF", "NGCF", "NMF", "OnlineIBPR", "PMF",
    "RecVAE", "SANSA", "SKMeans", "SVD", "UserKNN", "VAECF", "WBPR", "WMF")
# Set by the harness, not by a suite: the suite's seed, and no per-epoch bars in Ray's log.
_RESERVED = ("name", "trainable", "verbose", "seed", "init_params", "init_par")
_BACKEND_PACKAGES = {"tensorflow": "tensorflow", "pytorch": "torch"}


@dataclass(frozen=True)
class BiVAEConfig:
    """Defaults are the Microsoft Recommenders MovieLens settings that method.md names."""

    k: int = 50
    encoder: tuple[int, ...] = (100,)
    act_fn: str = "tanh"
    likelihood: str = "pois"
    epochs: int = 500
    batch_size: int = 128
    learning_rate: float = 0.001
    seed: int = 0


def popularity_scores(split: Split) -> np.ndarray:
    """Number of train interactions per item, the same row for every user."""
    counts = np.bincount(split.item_index(split.train.item_id), minlength=len(split.item_ids))
    return np.broadcast_to(counts.astype(np.float32), (len(split.user_ids), len(counts))).copy()


def train_bivae(split: Split, cfg: BiVAEConfig, threads: int = 1):
    """Fit cornac's BiVAECF on the train half; returns (model, scores users × items)."""
    import torch
    import cornac
    from cornac.models.bivaecf import bivae as bivae_module

    train_set = _train_set(split, cfg.seed)
    model = cornac.models.BiVAECF(
        k=cfg.k, encoder_structure=list(cfg.encoder), act_fn=cfg.act_fn,
        likelihood=cfg.likelihood, n_epochs=cfg.epochs, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, seed=cfg.seed, use_gpu=torch.cuda.is_available(),
        verbose=True)
    # cornac draws its epoch bar with tqdm.trange and has no hook for it: for the fit only, its
    # module's trange is ours (Ray-aware, one redraw a second); restored however the fit ends
    bar = lambda *a, **kw: _EpochBar(range(*a), desc="BiVAE epochs")  # noqa: E731
    # one thread by default: two slowed BiVAE 3-30x under any other load
    with mock.patch.object(bivae_module, "trange", bar), torch_threads(threads):
        model.fit(train_set)
        scores = bivae_score_matrix(model, train_set, split)
    return model, scores


class _EpochBar:
    """An epoch bar that ignores cornac's per-batch set_postfix (it redraws the bar every batch)."""

    def __init__(self, it, desc):
        self._bar = progress(it, desc=desc, total=len(it), mininterval=1.0)

    def __iter__(self):
        try:
            yield from self._bar
        finally:
            self._bar.close()

    def set_postfix(self, *args, **kwargs):
        pass


def bivae_score_matrix(model, train_set, split: Split) -> np.ndarray:
    """All users × all items in one product; unknown items score below the known minimum."""
    import torch

    with torch.no_grad():
        known = model.bivae.decode_user(model.bivae.mu_theta, model.bivae.mu_beta).cpu().numpy()
    return _place(known, train_set, split)


def _train_set(split: Split, seed: int):
    import cornac

    triples = list(zip(split.train.user_id.astype(str), split.train.item_id.astype(str),
                       split.train.rating.astype(float)))
    return cornac.data.Dataset.from_uir(triples, seed=seed)


def _place(known: np.ndarray, train_set, split: Split) -> np.ndarray:
    """cornac's users × items block into the split's full matrix; unscored cells go below the
    lowest score."""
    rows = split.user_index(np.array([int(u) for u in train_set.user_ids]))
    cols = split.item_index(np.array([int(i) for i in train_set.item_ids]))
    scores = np.full((len(split.user_ids), len(split.item_ids)), np.nan, dtype=np.float32)
    scores[np.ix_(rows, cols)] = known
    floor = np.nanmin(scores) - 1.0
    return np.nan_to_num(scores, nan=floor)


# ---- any cornac model by name -------------------------------------------------------------------

def model_name(name: str) -> str:
    """The canonical spelling of an engagement model name (case-insensitive), or ValueError."""
    allowed = LEGACY_MODELS + CORNAC_MODELS
    by_lower = {a.lower(): a for a in allowed}
    if str(name).lower() in by_lower:
        return by_lower[str(name).lower()]
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)
    hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
    import cornac.models

    what = ("a cornac model that needs more than ratings here (side information, another model "
            "or sequences)" if isinstance(getattr(cornac.models, str(name), None), type)
            else "unknown engagement model")
    raise ValueError(f"{what}{hint}; allowed: {', '.join(allowed)}")


def cornac_params(model: str, params: dict) -> dict:
    """`params` checked against the constructor of cornac's `model` (names, and the types its
    docstring declares), with the harness's own defaults added; ValueError names the bad one."""
    import cornac.models

    cls = getattr(cornac.models, model)
    signature = inspect.signature(cls.__init__).parameters
    defaults = {k: p.default for k, p in signature.items()
                if k not in ("self", *_RESERVED) and p.kind is p.POSITIONAL_OR_KEYWORD}
    out = {}
    for key, value in params.items():
        if key not in defaults:
            why = (f"is not a parameter of {model}" if key not in _RESERVED
                   else "is set by the harness" + (" from the suite's seed" if key == "seed"
                                                   else ""))
            close = difflib.get_close_matches(key, defaults, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close and key not in _RESERVED else ""
            raise ValueError(f"{key!r} {why}{hint}; allowed: {', '.join(defaults) or 'none'}")
        out[key] = _typed(cls, key, value, defaults[key])
    if defaults.get("backend") == "tensorflow":
        out.setdefault("backend", "pytorch")  # torch is what this harness installs
    if "num_threads" in defaults:
        out.setdefault("num_threads", 1)  # parallel (Hogwild) SGD is not reproducible
    return out


_DOC_TYPES = {"int": int, "integer": int, "float": float, "bool": bool, "boolean": bool,
              "str": str, "string": str, "list": list, "dict": dict}


def _declared(cls, key: str, default) -> tuple[type | None, list[str]]:
    """(type, allowed strings) of a constructor parameter as cornac's numpydoc docstring declares
    it ("k: int, optional, default: 10", 'variant: {"linear","non_linear"}'); else the type of
    its default, and None (anything) for a None default."""
    found = re.search(rf"^\s*{re.escape(key)}\s*:\s*(.*)$", cls.__doc__ or "", re.M)
    text = found.group(1).strip() if found else ""
    if text.startswith("{"):
        inside = text[1:text.find("}")]
        return (dict, []) if ":" in inside else (str, re.findall(r"[\"']([^\"']+)[\"']", inside))
    kind = _DOC_TYPES.get(text.split(",")[0].strip().lower())
    if kind is None and default is not None:
        kind = list if isinstance(default, tuple) else type(default)
    return kind, []


def _typed(cls, key: str, value, default):
    """`value` if it has the declared type (ints pass as floats; None where the default is None),
    as JSON-able as it came; ValueError otherwise."""
    kind, choices = _declared(cls, key, default)
    ok = (kind is None or (value is None and default is None)
          or (kind is bool and isinstance(value, bool))
          or (kind is int and isinstance(value, int) and not isinstance(value, bool))
          or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
          or (kind is str and isinstance(value, str) and (not choices or value in choices))
          or (kind is list and isinstance(value, (list, tuple)))
          or (kind is dict and isinstance(value, dict)))
    if not ok:
        wanted = ("one of " + ", ".join(map(repr, choices)) if choices
                  else f"{'an' if kind is int else 'a'} {kind.__name__}")
        raise ValueError(f"{key!r} of {cls.__name__} takes {wanted} (got {value!r})")
    if kind is float and value is not None:
        return float(value)  # 1 and 1.0 are one setting, one cache key
    return list(value) if isinstance(value, tuple) else value


def missing_packages(model: str, params: dict) -> list[str]:
    """The import names that cornac's `model` (with `params`' backend) needs and this
    environment lacks, from the model's own requirements.txt."""
    import cornac.models

    folder = Path(inspect.getfile(getattr(cornac.models, model))).parent
    req = folder / "requirements.txt"
    names = []
    for line in (req.read_text().splitlines() if req.exists() else []):
        name = re.match(r"\s*([A-Za-z0-9_.-]*)", line.split("#")[0]).group(1)
        if name and not line.lstrip().startswith("-"):  # "-f <url>" lines name no package
            names.append(name.replace("-", "_"))
    if "backend" in params and params["backend"] in _BACKEND_PACKAGES:
        names = [n for n in names if n not in _BACKEND_PACKAGES.values()]
        names.append(_BACKEND_PACKAGES[params["backend"]])
    return [n for n in dict.fromkeys(names) if importlib.util.find_spec(n) is None]


def train_cornac(split: Split, model: str, params: dict, seed: int, threads: int = 1):
    """Fit cornac's `model` on the train half through its `Recommender` interface; returns
    (model, scores users × items) from its own `score()`. Seeded; torch's and numpy's global
    random state and torch's thread count are restored afterwards."""
    import torch
    import cornac.models

    cls = getattr(cornac.models, model)
    accepted = inspect.signature(cls.__init__).parameters
    extra = {k: v for k, v in (("seed", seed), ("verbose", False)) if k in accepted}
    train_set = _train_set(split, seed)
    np_state = np.random.get_state()
    try:
        with torch_threads(threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed)  # for models that take no seed and draw from numpy's global RNG
            recommender = cls(**params, **extra)
            recommender.fit(train_set)
            known = np.stack([np.asarray(recommender.score(u), dtype=np.float64).reshape(-1)
                              for u in range(train_set.num_users)])
    finally:
        np.random.set_state(np_state)
    known[~np.isfinite(known)] = np.nan  # cannot score: ranked last with the unknown items
    return recommender, _place(known, train_set, split)
