import os

# Tests never reach a model hub, and use one thread per process (see DEVELOPERS.md).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def movielens():
    """The real MovieLens-100k, from the cache that the setup step filled."""
    from ctrlrec.data import load_movielens
    return load_movielens()


@pytest.fixture(scope="session")
def split(movielens):
    from ctrlrec.data import chronological_split
    return chronological_split(movielens.ratings)
