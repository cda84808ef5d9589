"""Several seeds in one run (`seeds: [0, 1, 2]`): each seed's plan is built on its own, then the
plans are merged. A step whose key is the same under every seed (the dataset, item embeddings)
runs once; the others run once per seed, labelled `label@sN`. Sharing is decided by the keys
alone, so a stage is repeated exactly when its seed, or an input's, can change what it computes,
and a single-seed plan is the plan as it was before seeds existed (no suffix, the same keys)."""

from __future__ import annotations

SEP = "@s"


def seed_label(label: str, seed: int) -> str:
    return f"{label}{SEP}{seed}"


def split_label(label: str) -> tuple[str, int | None]:
    """'engagement@s1' -> ('engagement', 1); a label without a seed -> (label, None)."""
    base, sep, tail = label.rpartition(SEP)
    return (base, int(tail)) if sep and tail.isdigit() else (label, None)


def merge_seeds(plans: dict) -> list:
    """seed -> that seed's steps (same labels in the same order for every seed) -> one plan in
    dependency order: shared steps once, the others per seed with their inputs relabelled."""
    seeds = list(plans)
    if len(seeds) == 1:
        return plans[seeds[0]]
    by_seed = {s: {step.label: step for step in plans[s]} for s in seeds}
    first = plans[seeds[0]]
    if any(list(by_seed[s]) != [step.label for step in first] for s in seeds):
        raise AssertionError("seeds gave plans of different shapes")  # the seed is only a value
    shared = {step.label for step in first
              if len({by_seed[s][step.label].key for s in seeds}) == 1}
    merged = []
    for label in [step.label for step in first]:
        if label in shared:
            merged.append(by_seed[seeds[0]][label])
            continue
        for s in seeds:  # the keys are already set: they hold input keys, never labels
            own = by_seed[s][label]
            own.deps = [d if d in shared else seed_label(d, s) for d in own.deps]
            own.label = seed_label(label, s)
            merged.append(own)
    return merged


def seed_steps(plan: list, seed: int) -> dict:
    """The steps one seed uses, by label without the seed: its own steps and the shared ones."""
    out = {}
    for step in plan:
        base, s = split_label(step.label)
        if s is None or s == seed:
            out[base] = step
    return out


def repeated_stages(plan: list) -> list[str]:
    """The stages run once per seed (empty for a single-seed plan)."""
    return sorted({step.stage for step in plan if split_label(step.label)[1] is not None})
