"""The stages of `bench run`, by job: data.py (dataset, engagement, embeddings, requests, pool),
values.py (value matrices), distill.py (training requests, teacher labels, student), evaluate.py
(sweep, judge), llm.py (the cached LLM a stage calls). Each stage is a pure function of its config
and its inputs' artefacts (dicts of arrays, DataFrames and JSON-able values) and returns its own
artefacts; the runner caches them and carries them between Ray tasks."""

# Bump a stage's version when its code changes what it computes: old cache entries then miss.
VERSIONS = {"dataset": 1, "engagement": 1, "item_embeddings": 1, "requests": 3, "values": 1,
            "pool": 1, "sweep": 2, "judge": 1, "train_requests": 1, "teacher_labels": 1,
            "student": 1}
