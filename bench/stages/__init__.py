"""The stages of `bench run`, by job: data.py (dataset, engagement, embeddings, requests, pool),
values.py (value matrices), distill.py (training requests, teacher labels, student), evaluate.py
(sweep, judge), judge.py (the judge's two modes and its validation on planted feeds), llm.py
(the cached LLM a stage calls). Each stage is a pure function of its config
and its inputs' artefacts (dicts of arrays, DataFrames and JSON-able values) and returns its own
artefacts; the runner caches them and carries them between Ray tasks."""

# A salt in each stage's cache key. Edits to project code already change the key (its code hash,
# bench/codehash.py); bump a version only for what that hash cannot see (a third-party library
# that now computes differently, or code reached only dynamically).
VERSIONS = {"dataset": 1, "engagement": 1, "item_embeddings": 1, "requests": 3, "values": 1,
            "pool": 2, "sweep": 3, "judge": 2, "train_requests": 1, "teacher_labels": 1,
            "student": 1, "judge_validation": 1}
