"""Cost models fitted to the measured cells, to extrapolate the cells past a path's budget.

direct: fixed + per request (its prefix) + per prompt; distilled: encode (fixed + per request)
plus score (fixed + per item streamed + per item × request product)."""

from __future__ import annotations

import numpy as np

TERMS = {"direct": ["fixed_s", "per_request_s", "per_prompt_s"],
         "encode": ["fixed_s", "per_request_s"],
         "score": ["fixed_s", "per_item_s", "per_item_request_s"]}


def _design(method: str, part: str, items, requests) -> np.ndarray:
    n, r = np.asarray(items, float), np.asarray(requests, float)
    if method == "direct":            # fixed + per request (prefix) + per prompt
        return np.stack([np.ones_like(n), r, r * n], 1)
    if part == "encode":              # fixed + per request
        return np.stack([np.ones_like(r), r], 1)
    return np.stack([np.ones_like(n), n, r * n], 1)   # fixed + streaming items + products


def fit_part(method: str, part: str, items, requests, seconds) -> dict:
    """Non-negative least squares on relative error (every cell weighs the same whatever its
    size); error = relative residuals in-sample and leave-one-out."""
    from scipy.optimize import nnls

    X = _design(method, part, items, requests)
    y = np.asarray(seconds, float)
    W = X / y[:, None]

    def solve(mask):
        return nnls(W[mask], np.ones(mask.sum()))[0]

    coef = solve(np.ones(len(y), bool))
    rel = X @ coef / y - 1
    loo = []
    if len(y) > X.shape[1]:
        for i in range(len(y)):
            m = np.ones(len(y), bool)
            m[i] = False
            loo.append(float(X[i] @ solve(m) / y[i] - 1))
    key = "direct" if method == "direct" else part
    return {"terms": dict(zip(TERMS[key], map(float, coef))), "points": int(len(y)),
            "max_rel_error": float(np.abs(rel).max()), "median_rel_error": float(np.median(np.abs(rel))),
            "loo_max_rel_error": float(np.abs(loo).max()) if loo else None}


def fit_models(meas: dict) -> dict:
    models = {}
    for info in meas["paths"]:
        rows = [r for r in meas["rows"] if r["path"] == info["label"]]
        if not rows:
            continue
        it, rq = [r["items"] for r in rows], [r["requests"] for r in rows]
        if info["method"] == "direct":
            models[info["label"]] = {"direct": fit_part("direct", "", it, rq,
                                                        [r["seconds"] for r in rows])}
        else:
            enc = {r["requests"]: r["encode_seconds"] for r in rows}
            models[info["label"]] = {
                "encode": fit_part("distilled", "encode", list(enc), list(enc),
                                   list(enc.values())),
                "score": fit_part("distilled", "score", it, rq, [r["score_seconds"] for r in rows])}
    return models


def predict(model: dict, method: str, items: float, requests: float) -> float:
    if method == "direct":
        t = model["direct"]["terms"]
        return t["fixed_s"] + t["per_request_s"] * requests + t["per_prompt_s"] * requests * items
    e, s = model["encode"]["terms"], model["score"]["terms"]
    return (e["fixed_s"] + e["per_request_s"] * requests + s["fixed_s"] + s["per_item_s"] * items
            + s["per_item_request_s"] * items * requests)
