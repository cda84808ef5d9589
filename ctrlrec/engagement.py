"""Engagement predictors f_eng(u, i): cornac's BiVAE (the paper's) and a popularity baseline.

Both return a dense users × items float32 score matrix aligned with a `Split`. Items that never
occur in the train half are unknown to BiVAE; they get a score below every known item so that the
base recommender ranks them last (they stay candidates: request scores can still lift them)."""

from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np

from .data import Split
from .progress import progress


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

    def as_dict(self) -> dict:
        return asdict(self)


def popularity_scores(split: Split) -> np.ndarray:
    """Number of train interactions per item, the same row for every user."""
    counts = np.bincount(split.item_index(split.train.item_id), minlength=len(split.item_ids))
    return np.broadcast_to(counts.astype(np.float32), (len(split.user_ids), len(counts))).copy()


def train_bivae(split: Split, cfg: BiVAEConfig, threads: int = 1):
    """Fit cornac's BiVAECF on the train half; returns (model, scores users × items)."""
    import torch
    import cornac
    from cornac.models.bivaecf import bivae as bivae_module

    torch.set_num_threads(threads)  # two threads slowed BiVAE 3-30x under any other load
    triples = list(zip(split.train.user_id.astype(str), split.train.item_id.astype(str),
                       split.train.rating.astype(float)))
    train_set = cornac.data.Dataset.from_uir(triples, seed=cfg.seed)
    model = cornac.models.BiVAECF(
        k=cfg.k, encoder_structure=list(cfg.encoder), act_fn=cfg.act_fn,
        likelihood=cfg.likelihood, n_epochs=cfg.epochs, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, seed=cfg.seed, use_gpu=torch.cuda.is_available(),
        verbose=True)
    # cornac draws its epoch bar with tqdm.trange; route it through our hook (Ray-aware).
    original = bivae_module.trange
    bivae_module.trange = lambda *a, **kw: _EpochBar(range(*a), desc="BiVAE epochs")
    try:
        model.fit(train_set)
    finally:
        bivae_module.trange = original
    return model, bivae_score_matrix(model, train_set, split)


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
    rows = split.user_index(np.array([int(u) for u in train_set.user_ids]))
    cols = split.item_index(np.array([int(i) for i in train_set.item_ids]))
    scores = np.full((len(split.user_ids), len(split.item_ids)), np.nan, dtype=np.float32)
    scores[np.ix_(rows, cols)] = known
    floor = np.nanmin(scores) - 1.0
    return np.nan_to_num(scores, nan=floor)
