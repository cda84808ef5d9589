"""Where a run came from: the manifest records whether its tree had uncommitted changes (and
which), and the leaderboard leaves such runs out unless asked for."""

import json
import subprocess

import pytest

from bench import cli
from bench.leaderboard import collect_all, write
from bench.report.provenance import git_state, is_dirty


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_git_state_names_what_makes_a_tree_dirty(tmp_path):
    assert git_state(tmp_path) == {"commit": "unknown", "dirty": None}  # not a checkout
    (tmp_path / "ctrlrec").mkdir()
    (tmp_path / "ctrlrec" / "metrics.py").write_text("X = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert clean["dirty"] is False and len(clean["commit"]) == 40 and "changed" not in clean
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")  # run outputs are not code
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "ctrlrec" / "metrics.py").write_text("X = 2\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "new.py").write_text("")  # an untracked module can change results
    state = git_state(tmp_path)
    assert state == {"commit": clean["commit"], "dirty": True,
                     "changed": ["bench/new.py", "ctrlrec/metrics.py"]}


def test_is_dirty_reads_new_and_old_manifests():
    assert is_dirty({"git": {"commit": "a", "dirty": True}})
    assert not is_dirty({"git": {"commit": "a", "dirty": False}, "git_commit": "a"})
    assert is_dirty({"git": {"commit": "unknown", "dirty": None}})  # unknown is not clean
    assert is_dirty({"git_commit": "0c747f1cac8fd6d839045dc8e4de307e39920ca3-dirty"})
    assert not is_dirty({"git_commit": "007b5cb6e65762ddab5cfe81ab78172e9529ed3b"})


def run_folder_by_hand(folder, dirty: bool):
    """A finished run as the leaderboard reads it: manifest.json and table1.csv."""
    folder.mkdir(parents=True)
    git_info = {"commit": "f" * 40, "dirty": dirty, **({"changed": ["bench/plan.py"]}
                                                      if dirty else {})}
    (folder / "manifest.json").write_text(json.dumps({
        "suite": {"name": folder.parent.name, "requests": {"kind": "genre"},
                  "engagement": {"model": "bivae"}, "methods": [{"name": "untrained"}]},
        "created_utc": "2026-01-02T03:04:05", "n_users": 10,
        "git_commit": "f" * 40 + ("-dirty" if dirty else ""), "git": git_info,
        **({} if dirty else {"protocol": 2})}))  # the dirty one: from before the field
    (folder / "table1.csv").write_text(
        "method,context,aggregation,k,max_satisfaction,ci_low,ci_high,w_control,precision\n"
        f"untrained,*,rank,5,{0.4 if dirty else 0.3},0.2,0.5,0.5,0.1\n")


def test_leaderboard_leaves_dirty_runs_out_unless_asked(tmp_path):
    run_folder_by_hand(tmp_path / "genre" / "clean", dirty=False)
    run_folder_by_hand(tmp_path / "genre" / "edited", dirty=True)
    dirty: list = []
    df, skipped = collect_all(tmp_path, dirty=dirty)
    assert list(df.run) == ["clean"] and skipped == []
    assert dirty == [("genre/edited", "commit ffffffffff, 1 changed files")]
    text = write(tmp_path)
    assert "## Left out: 1 run from a dirty tree" in text and "`genre/edited`" in text
    assert "| clean" in text and "| edited" not in text
    assert cli.main(["leaderboard", str(tmp_path), "--include-dirty"]) == 0
    text = (tmp_path / "leaderboard.md").read_text()
    assert "Left out" not in text and "| edited" in text and "ffffffffff-dirty" in text
    df, _ = collect_all(tmp_path, include_dirty=True)
    assert list(df.run) == ["edited", "clean"]  # best first: the dirty run's 0.4 leads
    assert list(df.protocol) == [1, 2]


def test_version_names_the_package_commit_and_protocol(capsys):
    import re

    from bench.report.provenance import PROTOCOL, git_commit

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"ctrlrec-bench \S+ \(git {re.escape(git_commit())}, protocol "
                        rf"{PROTOCOL}\)\n", out), out
