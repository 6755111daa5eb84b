"""analysis: run directories built with known values -> every table number equals the value computed by hand."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis import tables
from analysis.collect import collect
from analysis.published import published_for
from analysis.stats import bootstrap_ci, compare
from analysis.synthetic import checkpoint_init, write_finetune_run, write_pretrain_run
from ecg_hpc.errors import DataError

# (seed, macro F1, per-class F1 A N O ~, epochs_run, best_epoch) per finished run, chosen by hand
RANDOM = [(10, 0.70, (0.66, 0.89, 0.68, 0.57), 60, 10), (20, 0.72, (0.70, 0.90, 0.70, 0.58), 80, 30),
          (30, 0.74, (0.72, 0.91, 0.71, 0.62), 70, 20)]
BEAT_EP2 = [(10, 0.76, (0.75, 0.91, 0.72, 0.66), 55, 5), (20, 0.78, (0.78, 0.92, 0.74, 0.68), 52, 2),
            (30, 0.77, (0.76, 0.92, 0.73, 0.67), 57, 7)]
BEAT_EP1 = [(10, 0.75, (0.74, 0.90, 0.71, 0.65), 58, 8), (20, 0.73, (0.70, 0.90, 0.70, 0.62), 61, 11)]
BEAT_F10 = [(10, 0.745, (0.72, 0.90, 0.72, 0.64), 62, 12), (20, 0.755, (0.74, 0.91, 0.72, 0.65), 64, 14)]
BEAT_F512 = [(10, 0.765, (0.75, 0.91, 0.73, 0.67), 50, 3), (20, 0.775, (0.77, 0.92, 0.73, 0.68), 54, 4)]
RANDOM_2D = [(10, 0.71, (0.68, 0.90, 0.69, 0.57), 90, 40), (20, 0.69, (0.64, 0.89, 0.67, 0.56), 100, 50)]
BEAT_F10_2D = [(10, 0.76, (0.75, 0.91, 0.72, 0.66), 60, 9), (20, 0.74, (0.71, 0.90, 0.71, 0.64), 66, 16)]

S_RANDOM = "random -> resnet18"
S_EP2 = "beat resnet18 f4096 100% ep2 -> resnet18"
S_EP1 = "beat resnet18 f4096 100% ep1 -> resnet18"
S_F10 = "beat resnet18 f4096 10% ep2 -> resnet18"
S_F512 = "beat resnet18 f512 100% ep1 -> resnet18"
S_RANDOM_2D = "random -> resnet18_2d"
S_F10_2D = "beat resnet18_2d f4096 10% ep2 -> resnet18_2d"
EXPECTED = {S_RANDOM: RANDOM, S_EP2: BEAT_EP2, S_EP1: BEAT_EP1, S_F10: BEAT_F10, S_F512: BEAT_F512,
            S_RANDOM_2D: RANDOM_2D, S_F10_2D: BEAT_F10_2D}
CLASSES = ("A", "N", "O", "~")


def _write(root: Path, folder: str, runs: list, init: dict, arch: str = "resnet18") -> None:
    """Write the finished fine-tuning runs of one scenario, with validation curves rising to 0.5 + seed/1000."""
    for seed, macro, per_class, epochs_run, best_epoch in runs:
        curve = [0.5 + seed / 1000 * e / epochs_run for e in range(1, epochs_run + 1)]
        write_finetune_run(root / "finetune" / folder / f"seed_{seed}", seed=seed, init=init, arch=arch,
                           f1=dict(zip(CLASSES, per_class)), macro_f1=macro, epochs_run=epochs_run,
                           best_epoch=best_epoch, val_f1=curve)


def build_runs(root: Path) -> Path:
    """A runs tree with every kind of scenario, plus failed, running, malformed, incomplete and missing runs."""
    full = write_pretrain_run(root / "pretrain" / "beat_full", frame_size=4096, frac=1.0)
    f10 = write_pretrain_run(root / "pretrain" / "beat_f10", frame_size=4096, frac=0.1)
    f512 = write_pretrain_run(root / "pretrain" / "beat_f512", frame_size=512, frac=None, epochs=1)
    f10_2d = write_pretrain_run(root / "pretrain" / "beat_f10_2d", arch="resnet18_2d", frac=0.1)
    write_pretrain_run(root / "pretrain" / "crashed", status="failed", error="OSError: disk full")
    _write(root, "random", RANDOM, {"source": "random"})
    _write(root, "beat_full_epoch_02", BEAT_EP2, checkpoint_init(full, 2))
    _write(root, "beat_full_epoch_01", BEAT_EP1, checkpoint_init(full, 1))
    _write(root, "beat_f10_epoch_02", BEAT_F10, checkpoint_init(f10, 2, frac=0.1))
    # an init that records only the checkpoint: frame and fraction come from the pretraining run.json
    # (frac None there = all patients), the epoch from the epoch_NN path
    _write(root, "beat_f512_epoch_01", BEAT_F512, {"source": "checkpoint", "pretrain_run": str(f512), "task": "beat",
                                                   "arch": "resnet18", "checkpoint": str(f512 / "epoch_01")})
    _write(root, "random_resnet18_2d", RANDOM_2D, {"source": "random"}, arch="resnet18_2d")
    _write(root, "beat_f10_2d_epoch_02_resnet18_2d", BEAT_F10_2D, checkpoint_init(f10_2d, 2, arch="resnet18_2d",
                                                                                   frac=0.1), arch="resnet18_2d")
    sweep = root / "finetune"
    write_finetune_run(sweep / "random" / "seed_40", seed=40, init={"source": "random"}, status="failed",
                       error="Traceback (most recent call last):\nValueError: NaN loss at epoch 3")
    write_finetune_run(sweep / "random" / "seed_50", seed=50, init={"source": "random"}, status="running")
    broken = sweep / "random" / "seed_60"
    broken.mkdir(parents=True)
    (broken / "run.json").write_text('{"kind": "finetune", "status": "done", ', encoding="utf-8")
    no_history = write_finetune_run(sweep / "random_w" / "seed_10", seed=10, init={"source": "random"}, width=0.5,
                                    f1={"A": 0.5, "N": 0.8, "O": 0.5, "~": 0.4}, macro_f1=0.55, epochs_run=4)
    (no_history / "history.csv").unlink()
    planned = [{"index": i, "scenario": "random", "seed": s, "job_dir": str(sweep / "random" / f"seed_{s}")}
               for i, s in enumerate((10, 20, 30, 40, 50, 70))]
    (sweep / "manifest.jsonl").write_text("".join(json.dumps(p) + "\n" for p in planned), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_runs(tmp_path_factory.mktemp("report") / "runs")


@pytest.fixture(scope="module")
def collection(runs_root: Path):
    return collect(runs_root, progress=False)


@pytest.fixture(scope="module")
def summary(collection):
    return tables.summarise(collection.done).set_index("scenario")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values)


def test_scenarios_are_grouped_by_run_json_not_folders(summary) -> None:
    assert set(summary.index) == set(EXPECTED) | {"random -> resnet18 x0.5"}
    # folder beat_f512_epoch_01: frame, fraction and epoch were not in init and come from elsewhere
    row = summary.loc[S_F512]
    assert (row["frame_size"], row["frac"], row["pretrain_epoch"]) == (512, 1.0, 1)


def test_table1_every_number_matches_hand_computation(summary) -> None:
    table = tables.table1(summary.reset_index()).set_index("scenario")
    for scenario, runs in EXPECTED.items():
        row = table.loc[scenario]
        assert row["n"] == len(runs)
        mean, sd = _mean_sd([r[1] for r in runs])
        assert row["macro_f1_mean"] == pytest.approx(mean, abs=1e-12)
        assert row["macro_f1_sd"] == pytest.approx(sd, abs=1e-12)
        for i, c in enumerate(CLASSES):
            mean, sd = _mean_sd([r[2][i] for r in runs])
            assert row[f"f1_{c}_mean"] == pytest.approx(mean, abs=1e-12)
            assert row[f"f1_{c}_sd"] == pytest.approx(sd, abs=1e-12)
    single = table.loc["random -> resnet18 x0.5"]
    assert single["n"] == 1 and single["macro_f1_mean"] == 0.55 and math.isnan(single["macro_f1_sd"])


def test_table1_published_numbers_stand_beside_the_right_rows(summary) -> None:
    def published(scenario: str) -> tuple:
        r = summary.loc[scenario]
        return tuple(None if math.isnan(r[k]) else r[k] for k in
                     ("paper_macro_f1", "paper_macro_f1_sd", "paper_f1_N", "paper_f1_A", "paper_f1_O",
                      "paper_f1_~", "repro_macro_f1"))

    assert published(S_RANDOM) == (0.731, 0.019, 0.898, 0.711, 0.701, 0.613, 0.702)
    assert published(S_EP2) == (0.768, None, None, None, None, None, 0.773)
    assert published(S_EP1) == (None,) * 7  # not the final checkpoint of its pretraining run
    assert published(S_F10) == (None,) * 6 + (0.765,)
    assert published(S_F512) == (0.769, None, None, None, None, None, None)
    assert published(S_RANDOM_2D) == (None,) * 6 + (0.715,)
    assert published(S_F10_2D) == (None,) * 6 + (0.762,)
    assert published("random -> resnet18 x0.5") == (None,) * 7  # narrower than the published models


def test_published_lookup_covers_design_numbers() -> None:
    assert published_for("checkpoint", "beat", 2048, 1.0, "resnet18").paper_macro_f1 == 0.779
    assert published_for("checkpoint", "beat", 4096, 0.01, "resnet18").repro_macro_f1 == 0.754
    assert published_for("checkpoint", "beat", 4096, 0.2, "resnet18").repro_macro_f1 == 0.765
    assert published_for("checkpoint", "beat", 4096, 0.2, "resnet18_2d").repro_macro_f1 == 0.769
    assert published_for("checkpoint", "rhythm", 4096, 1.0, "resnet18").paper_macro_f1 is None
    assert published_for("random", None, None, None, "resnet34").paper_macro_f1 is None


def test_epochs_to_early_stop(summary) -> None:
    table = tables.epochs_table(summary.reset_index()).set_index("scenario")
    for scenario, runs in EXPECTED.items():
        assert (table.loc[scenario, "epochs_run_mean"], table.loc[scenario, "epochs_run_sd"]) == \
            pytest.approx(_mean_sd([r[3] for r in runs]), abs=1e-12)
        assert (table.loc[scenario, "best_epoch_mean"], table.loc[scenario, "best_epoch_sd"]) == \
            pytest.approx(_mean_sd([r[4] for r in runs]), abs=1e-12)


def test_comparisons_difference_ci_and_welch(collection, summary) -> None:
    result = tables.comparisons(collection.done, summary.reset_index(), seed=3, resamples=4000)
    result = result.set_index("scenario")
    expected_pairs = {S_EP2: S_RANDOM, S_EP1: S_RANDOM, S_F10: S_RANDOM, S_F512: S_RANDOM,
                      S_F10_2D: S_RANDOM_2D}
    assert dict(result["baseline"]) == expected_pairs
    for scenario, baseline in expected_pairs.items():
        a, b = [r[1] for r in EXPECTED[scenario]], [r[1] for r in EXPECTED[baseline]]
        row = result.loc[scenario]
        assert row["diff"] == pytest.approx(statistics.mean(a) - statistics.mean(b), abs=1e-12)
        assert row["p_value"] == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
        assert row["ci_low"] < row["ci_high"]
        # a percentile bootstrap interval lies within the range of possible resampled differences
        assert min(a) - max(b) <= row["ci_low"] and row["ci_high"] <= max(a) - min(b)
    again = tables.comparisons(collection.done, summary.reset_index(), seed=3, resamples=4000).set_index("scenario")
    assert again[["ci_low", "ci_high"]].equals(result[["ci_low", "ci_high"]])  # seeded


def test_fraction_and_pretrain_epoch_tables(summary) -> None:
    fraction = tables.fraction_table(summary.reset_index())
    family = fraction[fraction["family"] == "beat resnet18 f4096 ep2 -> resnet18"]
    assert list(family["frac"]) == [0.1, 1.0]
    for (_, row), runs in zip(family.iterrows(), (BEAT_F10, BEAT_EP2)):
        assert (row["macro_f1_mean"], row["macro_f1_sd"]) == pytest.approx(_mean_sd([r[1] for r in runs]))
    assert list(family["repro_macro_f1"]) == [0.765, 0.773]
    assert S_EP1 not in set(fraction["scenario"])  # the latest checkpoint stands for its configuration
    epochs = tables.pretrain_epoch_table(summary.reset_index())
    assert list(epochs["scenario"]) == [S_EP1, S_EP2]
    assert list(epochs["pretrain_epoch"]) == [1, 2]
    assert epochs["macro_f1_mean"].tolist() == pytest.approx([statistics.mean(r[1] for r in BEAT_EP1),
                                                              statistics.mean(r[1] for r in BEAT_EP2)])


def test_arch_table_pairs_1d_and_2d(summary) -> None:
    arch = tables.arch_table(summary.reset_index())
    assert list(zip(arch["init_config"], arch["dims"], arch["scenario"])) == [
        ("random", "1-D", S_RANDOM), ("random", "2-D", S_RANDOM_2D),
        ("beat f4096 10%", "1-D", S_F10), ("beat f4096 10%", "2-D", S_F10_2D)]
    assert arch.loc[3, "macro_f1_mean"] == pytest.approx(statistics.mean(r[1] for r in BEAT_F10_2D))


def test_problems_are_listed_never_dropped(collection) -> None:
    problems = {(p.problem, p.run_dir): p for p in collection.problems.itertuples()}
    failed = problems[("failed", "finetune/random/seed_40")]
    assert "NaN loss at epoch 3" in failed.detail and failed.seed == "40"
    # run.json says running, but no process holds the run: died, and re-submitting redoes it
    assert "submit it again" in problems[("died", "finetune/random/seed_50")].detail
    assert "not valid JSON" in problems[("malformed", "finetune/random/seed_60")].detail
    assert "planned in" in problems[("missing", "finetune/random/seed_70")].detail
    assert "no history.csv" in problems[("incomplete", "finetune/random_w/seed_10")].detail
    assert problems[("failed", "pretrain/crashed")].detail == "OSError: disk full"
    assert len(problems) == 6  # nothing else: planned tasks that finished are not problems
    statuses = collection.runs["status"].value_counts().to_dict()
    assert statuses == {"done": 17, "failed": 1, "running": 1}
    assert collection.n_pretrain == 5


def test_curves_hold_every_epoch_of_finished_runs(collection) -> None:
    curves = collection.history[collection.history["scenario"] == S_RANDOM]
    assert len(curves) == sum(r[3] for r in RANDOM)
    last = curves.groupby("run_dir")["f1"].max().sort_index()
    assert last.tolist() == pytest.approx([0.51, 0.52, 0.53])


def test_empty_or_missing_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no run directories"):
        collect(tmp_path, progress=False)
    with pytest.raises(DataError, match="no such directory"):
        collect(tmp_path / "absent", progress=False)


def test_bootstrap_is_seeded_and_degenerate_cases() -> None:
    a, b = np.array([0.8, 0.8, 0.8]), np.array([0.7, 0.7])
    assert bootstrap_ci(a, b, np.random.default_rng(0), resamples=100) == pytest.approx((0.1, 0.1))
    x, y = np.array([0.71, 0.75, 0.78, 0.74]), np.array([0.70, 0.69, 0.73])
    first = bootstrap_ci(x, y, np.random.default_rng(7), resamples=2000)
    assert first == bootstrap_ci(x, y, np.random.default_rng(7), resamples=2000)
    one = compare(np.array([0.8]), y, np.random.default_rng(0))
    assert one.diff == pytest.approx(0.8 - statistics.mean(y.tolist()))
    assert math.isnan(one.ci_low) and math.isnan(one.p_value)


def test_duplicates_relative_manifest_paths_and_unknown_status(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for folder in ("a", "b"):  # two folders, one scenario and seed: counted once, the other flagged
        write_finetune_run(root / folder / "seed_1", seed=1, init={"source": "random"}, macro_f1=0.7)
    queued = root / "q" / "seed_2"
    queued.mkdir(parents=True)
    (queued / "run.json").write_text(json.dumps({"kind": "finetune", "status": "queued"}), encoding="utf-8")
    (root / "manifest.jsonl").write_text(json.dumps({"job_dir": "a/seed_1", "seed": 1}) + "\n"
                                         + json.dumps({"job_dir": "c/seed_3", "seed": 3}) + "\n", encoding="utf-8")
    found = collect(root, progress=False)
    problems = sorted((p.problem, p.run_dir, p.seed) for p in found.problems.itertuples())
    # Same finished_at second: the later run directory name counts, the other is listed
    assert [p[:2] for p in problems[:2]] == [("duplicate", "a/seed_1"), ("malformed", "q/seed_2")]
    assert problems[2][0] == "missing" and problems[2][1].endswith("c/seed_3") and problems[2][2] == "3"
    assert len(problems) == 3
    summary = tables.summarise(found.done)
    assert summary["n"].tolist() == [1]
