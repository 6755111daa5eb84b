"""python -m analysis.report: files in every format, figures, problems, one-line errors."""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.report import main
from ecg_hpc.project_config import update_config
from tests.fake_runs import RANDOM_INIT, checkpoint_init, write_finetune_run, write_pretrain_run
from tests.test_report import BEAT_EP2, RANDOM, S_EP2, S_RANDOM, build_runs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_runs(tmp_path_factory.mktemp("cli") / "runs")


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["scenario"]: row for row in csv.DictReader(fh)}


def test_report_writes_tables_and_figures(runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "reports"
    assert main(["--runs", str(runs_root), "--out", str(out), "--format", "all", "--resamples", "2000",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "beat, resnet18, frame 4096, 100 % of patients, epoch 2 -> resnet18" in printed
    assert "ValueError: NaN loss at epoch 3" in printed and "finetune/random/seed_70" in printed

    table1 = _csv(out / "table1.csv")
    random_macro = [r[1] for r in RANDOM]
    assert float(table1[S_RANDOM]["macro_f1_mean"]) == pytest.approx(statistics.mean(random_macro), abs=1e-12)
    assert float(table1[S_RANDOM]["macro_f1_sd"]) == pytest.approx(statistics.stdev(random_macro), abs=1e-12)
    assert float(table1[S_RANDOM]["paper_macro_f1"]) == 0.731 and table1[S_EP2]["repro_macro_f1"] == "0.773"
    diff = statistics.mean(r[1] for r in BEAT_EP2) - statistics.mean(random_macro)
    assert float(_csv(out / "comparisons.csv")[S_EP2]["diff"]) == pytest.approx(diff, abs=1e-12)
    epochs = _csv(out / "epochs.csv")
    assert float(epochs[S_RANDOM]["epochs_run_mean"]) == statistics.mean(r[3] for r in RANDOM)

    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| random init -> resnet18 width 1 | 3 | 0.720 ± 0.020 | 0.763 ± 0.019 |" in markdown
    assert "![fig_val_f1](fig_val_f1.png)" in markdown and "challenge's score" in markdown
    tex = (out / "tables.tex").read_text(encoding="utf-8")
    assert r"beat, resnet18, frame 4096, 10 \% of patients, epoch 2 $\to$ resnet18" in tex
    assert r"0.720 $\pm$ 0.020" in tex
    with (out / "problems.csv").open(newline="", encoding="utf-8") as fh:
        assert {row["problem"] for row in csv.DictReader(fh)} == {"failed", "died", "malformed", "missing",
                                                                   "incomplete"}
    with (out / "runs.csv").open(newline="", encoding="utf-8") as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == 19 and {r["epochs_run"] for r in runs if r["seed"] == "40"} == {""}
    assert sorted(int(r["epochs_run"]) for r in runs if r["scenario"] == S_RANDOM and r["status"] == "done") == \
        sorted(r[3] for r in RANDOM)
    for name in ("fig_val_f1", "fig_fraction", "fig_per_class", "fig_pretraining"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_figures_that_no_longer_apply_are_removed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "reports"
    (out).mkdir()
    (out / "fig_fraction.png").write_bytes(b"stale")
    (out / "fig_fraction.pdf").write_bytes(b"stale")
    for seed in (1, 2):
        write_finetune_run(tmp_path / "runs" / "random" / f"seed_{seed}", seed=seed, init=RANDOM_INIT)
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--quiet", "--resamples", "100"]) == 0
    assert not (out / "fig_fraction.png").exists()  # no pretrained scenario, so no fraction figure
    assert not (out / "fig_fraction.pdf").exists()
    assert (out / "fig_per_class.png").stat().st_size > 0
    assert {p.name for p in out.glob("*.csv")} >= {"table1.csv", "fraction.csv", "problems.csv", "runs.csv"}


def test_empty_directory_gives_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "analysis.report", "--runs", str(tmp_path), "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path}: no run directories (no run.json found below it)"]
    assert not (tmp_path / "out").exists()


def test_missing_directory_and_only_failed_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--runs", str(tmp_path / "nope"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err
    write_finetune_run(tmp_path / "runs" / "random" / "seed_1", seed=1, init=RANDOM_INIT, status="failed",
                       error="ConfigError: --data x.npz: no such file")
    assert main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "ConfigError: --data x.npz: no such file" in captured.out  # the problem is still listed
    assert captured.err.count("\n") == 1 and "no finished fine-tuning runs" in captured.err
    assert not (tmp_path / "out").exists()


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--runs", str(tmp_path), "--format", "pdf"])
    assert exc.value.code == 2


def test_no_arguments_finds_runs_here_or_the_demos(runs_root: Path, tmp_path: Path) -> None:
    def report(cwd: Path, config: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "ECG_HPC_CONFIG": str(config)}
        return subprocess.run([sys.executable, "-m", "analysis.report", "--quiet", "--no-figures",
                               "--resamples", "100"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = report(empty, tmp_path / "ecg-hpc.toml")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: runs: no such directory here and no demo runs named in "
                                        f"{tmp_path / 'ecg-hpc.toml'}: give --runs DIR (make demo writes demo/runs; "
                                        "a sweep writes runs/finetune)"]
    update_config({"runs": runs_root}, tmp_path / "ecg-hpc.toml")
    proc = report(empty, tmp_path / "ecg-hpc.toml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"no runs/ here: reading the demo's runs in {runs_root}")
    assert (empty / "reports" / "table1.csv").is_file()
    here = tmp_path / "here"
    (here / "runs").mkdir(parents=True)
    proc = report(here, tmp_path / "ecg-hpc.toml")  # runs/ in the working directory comes first
    assert proc.returncode == 1 and "error: runs: no run directories" in proc.stderr


def test_unlike_pairs_are_not_compared_and_the_report_says_so(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    pretrain = write_pretrain_run(runs / "pretrain" / "beat_small", frame_size=4096, frac=1.0)
    for seed, (r, p) in enumerate([(0.50, 0.60), (0.52, 0.61), (0.49, 0.63)], start=1):
        write_finetune_run(runs / "finetune" / "random" / f"seed_{seed}", seed=seed, init=RANDOM_INIT,
                           macro_f1=r, width=1.0)
        write_finetune_run(runs / "finetune" / "beat_small_epoch_02" / f"seed_{seed}", seed=seed,
                           init=checkpoint_init(pretrain, 2), macro_f1=p, width=0.125)
    out = tmp_path / "out"
    assert main(["--runs", str(runs), "--out", str(out), "--quiet", "--no-figures", "--resamples", "100"]) == 0
    (row,) = _csv(out / "comparisons.csv").values()
    assert row["baseline"].startswith("not compared: no 'random -> resnet18 x0.125' runs (random init ran as "
                                      "resnet18)")
    assert row["diff"] == row["ci_low"] == row["p_value"] == ""
    # the same pair at one width is compared
    for seed in (1, 2, 3):
        write_finetune_run(runs / "finetune" / "random_w" / f"seed_{seed}", seed=seed, init=RANDOM_INIT,
                           macro_f1=0.5 + seed / 100, width=0.125)
    assert main(["--runs", str(runs), "--out", str(out), "--quiet", "--no-figures", "--resamples", "100"]) == 0
    (row,) = _csv(out / "comparisons.csv").values()
    assert row["baseline"] == "random -> resnet18 x0.125" and float(row["diff"]) == pytest.approx(
        (0.60 + 0.61 + 0.63) / 3 - 0.52)
