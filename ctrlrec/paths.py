"""Where downloaded assets and computed artefacts live (never inside the git tree's tracked files)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$CTRLREC_CACHE`, else `$XDG_CACHE_HOME/ctrlrec`, else `~/.cache/ctrlrec`."""
    env = os.environ.get("CTRLREC_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ctrlrec"


def data_dir() -> Path:
    return cache_root() / "data"


def llm_cache_path() -> Path:
    """The SQLite cache of LLM answers: `$CTRLREC_LLM_CACHE`, else beside the other caches."""
    env = os.environ.get("CTRLREC_LLM_CACHE")
    return Path(env).expanduser() if env else cache_root() / "llm.sqlite"
