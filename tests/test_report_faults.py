"""The report on a damaged runs tree: each (scenario, seed) once, links followed without loops, no NaN averaged."""

from __future__ import annotations

import json
import os
from pathlib import Path

from analysis import tables
from analysis.collect import SUPERSEDED, collect
from analysis.synthetic import write_finetune_run

RANDOM = {"source": "random"}


def _finished_at(job_dir: Path, when: str) -> None:
    info = json.loads((job_dir / "run.json").read_text())
    (job_dir / "run.json").write_text(json.dumps(dict(info, finished_at=when)))


def test_newest_done_run_of_a_scenario_and_seed_counts_once(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    newer = write_finetune_run(root / "again" / "seed_1", seed=1, init=RANDOM, macro_f1=0.8)
    older = write_finetune_run(root / "first" / "seed_1", seed=1, init=RANDOM, macro_f1=0.6)
    for seed, f1 in ((2, 0.7), (3, 0.9)):
        write_finetune_run(root / "first" / f"seed_{seed}", seed=seed, init=RANDOM, macro_f1=f1)
    _finished_at(newer, "2026-01-02T00:00:00+00:00")
    _finished_at(older, "2026-01-01T00:00:00+00:00")
    found = collect(root, progress=False)
    summary = tables.summarise(found.done)
    assert summary["n"].tolist() == [3]  # 3 seeds, not 4
    assert summary["macro_f1_mean"].tolist()[0] == (0.8 + 0.7 + 0.9) / 3
    status = dict(zip(found.runs["run_dir"], found.runs["status"]))
    assert status["first/seed_1"] == SUPERSEDED and status["again/seed_1"] == "done"
    dup = found.problems[found.problems["problem"] == "duplicate"]
    assert dup["run_dir"].tolist() == ["first/seed_1"] and "again/seed_1, is counted" in dup["detail"].iloc[0]
    assert "first/seed_1" not in set(found.history["run_dir"])


def test_symlinked_run_folders_are_followed_once_and_loops_end(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    for seed in (1, 2):
        write_finetune_run(scratch / "random" / f"seed_{seed}", seed=seed, init=RANDOM, macro_f1=0.5 + seed / 10)
    root = tmp_path / "runs"
    root.mkdir()
    os.symlink(scratch / "random", root / "random")  # runs linked in from scratch space
    os.symlink(scratch / "random", root / "same_again")  # a second link to the same runs
    os.symlink(root, root / "random_loop")  # a link back up the tree
    found = collect(root, progress=False)
    assert sorted(found.done["seed"].tolist()) == [1, 2]
    assert tables.summarise(found.done)["n"].tolist() == [2]
    assert found.problems[found.problems["problem"] == "duplicate"].empty


def test_a_non_finite_score_is_listed_and_never_averaged(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in (1, 2):
        write_finetune_run(root / "random" / f"seed_{seed}", seed=seed, init=RANDOM, macro_f1=0.7)
    bad = write_finetune_run(root / "random" / "seed_3", seed=3, init=RANDOM, macro_f1=0.7)
    info = json.loads((bad / "run.json").read_text())
    info["test"]["macro_f1"] = float("nan")
    (bad / "run.json").write_text(json.dumps(info))  # json writes NaN, as a diverged run once did
    write_finetune_run(root / "random" / "seed_4", seed=4, init=RANDOM, status="failed", error="NonFiniteLoss")
    found = collect(root, progress=False)
    summary = tables.summarise(found.done)
    assert summary["n"].tolist() == [2] and summary["macro_f1_mean"].tolist() == [0.7]
    listed = dict(zip(found.problems["run_dir"], found.problems["problem"]))
    assert listed["random/seed_3"] == "malformed" and listed["random/seed_4"] == "failed"
