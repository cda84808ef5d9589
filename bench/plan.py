"""From a suite to a plan: the list of steps (stage + config + inputs), each with its cache key."""

from __future__ import annotations

from dataclasses import dataclass, field

from .cache import stage_key
from .methods import METHODS
from .stages import VERSIONS
from .suite import Suite

SWEEP_CHUNK = 256  # users per sweep task; fixed, so results never depend on the worker count


@dataclass
class Step:
    label: str           # unique name in the plan, e.g. "values[untrained]"
    stage: str           # cache folder, e.g. "values"
    fn: str              # "module:function"
    config: dict
    deps: list[str] = field(default_factory=list)  # labels of the steps whose outputs it takes
    key: str = ""


def build_plan(suite: Suite, n_users: int) -> list[Step]:
    """Steps in dependency order. `n_users` is the number of evaluated users (for sweep chunks)."""
    d = suite.data.model_dump(mode="json")
    steps = [
        Step("dataset", "dataset", "bench.stages:dataset_stage", d),
        Step("engagement", "engagement", "bench.stages:engagement_stage",
             {**suite.engagement.model_dump(mode="json"), "seed": suite.seed}, ["dataset"]),
        Step("requests", "requests", "bench.stages:requests_stage",
             {**suite.requests.model_dump(mode="json"), "users": suite.users, "seed": suite.seed},
             ["dataset"]),
    ]
    for m in suite.methods:
        emb = f"item_embeddings[{m.model}]"
        if emb not in {s.label for s in steps}:
            steps.append(Step(emb, "item_embeddings", "bench.stages:item_embeddings_stage",
                              {"model": m.model}, ["dataset"]))
        # Methods that ignore context share one value matrix across contexts.
        steps.append(Step(f"values[{m.name}]", "values", METHODS[m.name],
                          m.model_dump(mode="json"), [emb, "requests"]))
        for agg in suite.aggregation:
            for lo in range(0, n_users, SWEEP_CHUNK):
                hi = min(lo + SWEEP_CHUNK, n_users)
                steps.append(Step(
                    f"sweep[{m.name},{agg},{lo}:{hi}]", "sweep", "bench.stages:sweep_stage",
                    {"aggregation": agg, "ws": suite.ws(), "ks": sorted(suite.k), "rows": [lo, hi]},
                    ["dataset", "engagement", f"values[{m.name}]", "requests"]))
    keys: dict[str, str] = {}
    for s in steps:
        s.key = stage_key(s.stage, VERSIONS[s.stage], s.config, [keys[d] for d in s.deps])
        keys[s.label] = s.key
    return steps


def n_evaluated(suite: Suite, total_users: int = 943) -> int:
    return total_users if suite.users == "all" else min(suite.users, total_users)
