"""One hook for progress bars, so a harness can route them (e.g. to Ray's driver) without ctrlrec
knowing about it."""

from __future__ import annotations

from typing import Callable, Iterable

from tqdm.auto import tqdm

_factory: Callable[..., Iterable] = tqdm


def set_progress_factory(factory: Callable[..., Iterable] | None) -> None:
    """Replace the tqdm-compatible bar factory (None restores plain tqdm)."""
    global _factory
    _factory = factory or tqdm


def progress(iterable=None, **kwargs):
    return _factory(iterable, **kwargs)
