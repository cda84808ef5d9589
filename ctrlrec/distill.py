"""Distillation: two copies of an embedding model, a request tower f and an item tower g, trained
so that f(r)·g(i) follows the direct LLM's judgements (normalised to [0, 1]).

At evaluation time the distilled value is one request embedding and one matrix product against
precomputed item embeddings; no LLM is involved."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .progress import progress


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    lr: float = 2e-5
    requests_per_batch: int = 4
    items_per_request: int = 8
    rank_loss: float = 0.0      # weight of a pairwise ranking loss beside the regression
    seed: int = 0


def sample_items(untrained: np.ndarray, per_request: int, seed: int) -> list[np.ndarray]:
    """Per request, half the items from the top of the untrained ranking (likely matches), half
    uniformly from the rest, so that matching and non-matching items are both well represented."""
    rng = np.random.default_rng(seed)
    n_top = per_request // 2
    out = []
    for row in untrained:
        order = np.argsort(-row, kind="stable")
        top = order[:n_top]
        rest = rng.choice(order[n_top:], size=per_request - n_top, replace=False)
        out.append(np.concatenate([top, rest]))
    return out


def correlations(pred: np.ndarray, teacher: np.ndarray) -> dict:
    pred, teacher = np.asarray(pred, float), np.asarray(teacher, float)
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(teacher) == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "n": int(len(pred))}
    return {"pearson": float(stats.pearsonr(pred, teacher)[0]),
            "spearman": float(stats.spearmanr(pred, teacher)[0]), "n": int(len(pred))}


class TwoTower:
    """f (requests) and g (items): separate copies of one sentence-transformers model."""

    def __init__(self, model_path: str, device: str = "cpu", trust_remote_code: bool = False):
        import torch
        from sentence_transformers import SentenceTransformer

        self.torch = torch
        self.device = device
        opts = {"local_files_only": Path(model_path).exists(),  # a hub id where a hub is reachable
                "trust_remote_code": trust_remote_code}
        self.f = SentenceTransformer(model_path, device=device, **opts)
        self.g = SentenceTransformer(model_path, device=device, **opts)
        # affine map from cosine similarity to the [0, 1] label scale (ranking ignores it)
        self.scale = torch.nn.Parameter(torch.tensor(2.0, device=device))
        self.bias = torch.nn.Parameter(torch.tensor(0.0, device=device))

    def _embed(self, model, texts: list[str]):
        prep = getattr(model, "preprocess", None) or model.tokenize  # renamed in s-t 6
        feats = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in prep(texts).items()}
        return self.torch.nn.functional.normalize(model(feats)["sentence_embedding"], dim=-1)

    def embed_requests(self, texts, batch: int = 64) -> np.ndarray:
        return self._encode(self.f, texts, batch)

    def embed_items(self, texts, batch: int = 64) -> np.ndarray:
        return self._encode(self.g, texts, batch)

    def _encode(self, model, texts, batch) -> np.ndarray:
        model.eval()
        with self.torch.no_grad():
            parts = [self._embed(model, list(texts[lo:lo + batch])).cpu().numpy()
                     for lo in range(0, len(texts), batch)]
        return np.concatenate(parts).astype(np.float32)

    def parameters(self):
        return [*self.f.parameters(), *self.g.parameters(), self.scale, self.bias]

    def state_bytes(self) -> bytes:
        """Both towers and the affine head as one safetensors blob (no pickle)."""
        from safetensors.torch import save

        tensors = {f"f.{k}": v.contiguous() for k, v in self.f.state_dict().items()}
        tensors.update({f"g.{k}": v.contiguous() for k, v in self.g.state_dict().items()})
        tensors["head.scale"] = self.scale.detach().reshape(1)
        tensors["head.bias"] = self.bias.detach().reshape(1)
        return save(tensors)

    def load_bytes(self, blob: bytes) -> "TwoTower":
        from safetensors.torch import load

        tensors = load(blob)
        for name, tower in (("f", self.f), ("g", self.g)):
            tower.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith(name + ".")})
        with self.torch.no_grad():
            self.scale.copy_(tensors["head.scale"][0])
            self.bias.copy_(tensors["head.bias"][0])
        return self


def _batches(pairs: pd.DataFrame, cfg: TrainConfig, rng) -> list[pd.DataFrame]:
    """Batches of a few requests with several items each, so the ranking loss has pairs."""
    groups = [g for _, g in pairs.groupby("request")]
    rng.shuffle(groups)
    chunks = [g.sample(frac=1.0, random_state=int(rng.integers(1 << 31))) for g in groups]
    pieces = [c.iloc[lo:lo + cfg.items_per_request] for c in chunks
              for lo in range(0, len(c), cfg.items_per_request)]
    order = rng.permutation(len(pieces))
    pieces = [pieces[i] for i in order]
    return [pd.concat(pieces[lo:lo + cfg.requests_per_batch])
            for lo in range(0, len(pieces), cfg.requests_per_batch)]


def train(towers: TwoTower, train_pairs: pd.DataFrame, cfg: TrainConfig) -> list[dict]:
    """train_pairs: request, item_text, label (in [0, 1]). Returns the loss per epoch."""
    torch = towers.torch
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(towers.parameters(), lr=cfg.lr)
    history = []
    for epoch in range(cfg.epochs):
        towers.f.train()
        towers.g.train()
        batches = _batches(train_pairs, cfg, rng)
        total, n = 0.0, 0
        for b in progress(batches, desc=f"distillation epoch {epoch + 1}/{cfg.epochs}"):
            y = torch.tensor(b.label.to_numpy(), dtype=torch.float32, device=towers.device)
            cos = (towers._embed(towers.f, b.request.tolist())
                   * towers._embed(towers.g, b.item_text.tolist())).sum(-1)
            loss = torch.mean((towers.scale * cos + towers.bias - y) ** 2)
            if cfg.rank_loss:
                same = torch.tensor(pd.factorize(b.request)[0], device=towers.device)
                mask = (same[:, None] == same[None, :]) & (y[:, None] > y[None, :] + 0.05)
                if mask.any():
                    diff = (cos[:, None] - cos[None, :])[mask]
                    loss = loss + cfg.rank_loss * torch.nn.functional.softplus(-10 * diff).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            n += len(b)
        history.append({"epoch": epoch + 1, "loss": total / max(n, 1)})
    return history


def predict_pairs(towers: TwoTower, pairs: pd.DataFrame) -> np.ndarray:
    """Cosine similarity f(r)·g(i) for each (request, item_text) row."""
    req = pairs.request.unique()
    items = pairs.item_text.unique()
    r = dict(zip(req, towers.embed_requests(list(req))))
    i = dict(zip(items, towers.embed_items(list(items))))
    return np.array([float(r[a] @ i[b]) for a, b in zip(pairs.request, pairs.item_text)])


def parse_jsonl_requests(text: str) -> list[str]:
    """The "request" strings of a JSON-lines answer. Models often pretty-print the objects or stop
    mid-way, so every complete `"request": "..."` pair is taken wherever it stands."""
    import re

    out = []
    for m in re.finditer(r'"request"\s*:\s*("(?:[^"\\]|\\.)*")', text):
        try:
            value = json.loads(m.group(1)).strip()
        except json.JSONDecodeError:
            continue
        if 3 <= len(value.split()) <= 60:
            out.append(value)
    return out
