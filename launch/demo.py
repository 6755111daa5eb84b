"""``python launch/demo.py``: the whole study at small scale, through the same commands a cluster user runs.

Stages: synthesise Icentia11k-format patients and challenge-format records (one shared physiology, see
``ecg_hpc.data.synthetic``); convert the patients to the shard store; prepare the challenge arrays; pretrain (the
rhythm task at full scale) with two Horovod workers through ``launch/pretrain.py``; plan and run the fine-tuning
sweep (random init plus each pretrained checkpoint, on a small labelled fraction of the training records, several
seeds) through ``launch/finetune.py``, as ``sbatch slurm/finetune_array.sh`` would; end with
``python -m analysis.report``, which also writes ``reports/summary.md``, the result tables without a timestamp.
Jobs go to the project's own test SLURM when it answers (``tests/cluster/slurm.sh start``; another SLURM only with
``--slurm``), else they run as local worker processes. Each stage is skipped when its output is already complete,
so an interrupted demo resumes where it stopped. The demo names its store and runs in ``ecg-hpc.toml``, so
``python launch/pretrain.py`` and ``python -m analysis.report`` find them afterwards.

``--real`` runs the same fine-tuning sweep and report on real challenge records (default: the 300 records of
``tests/data/physionet2017-validation``) from random init and from the synthetic demo's pretrained checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ecg_hpc.errors import ConfigError, EcgHpcError, user_error  # noqa: E402
from ecg_hpc.hpc.design import parse_seeds  # noqa: E402
from ecg_hpc.hpc.executor import slurm_available  # noqa: E402
from ecg_hpc.hpc.partition import slurm_conf_path  # noqa: E402
from ecg_hpc.interrupt import interrupted  # noqa: E402
from ecg_hpc.options import argparse_type  # noqa: E402
from ecg_hpc.project_config import config_path, update_config  # noqa: E402
from ecg_hpc.records import is_done  # noqa: E402
from ecg_hpc.train.pretrain_config import job_dir_name  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEST_CLUSTER_NAME = "ecghpc"  # ClusterName in the slurm.conf of tests/cluster/slurm.sh
DEFAULT_REAL = REPO / "tests" / "data" / "physionet2017-validation"
SUMMARY = "summary.md"


@dataclass(frozen=True)
class Scale:
    """Sizes of one demo: data, pretraining and fine-tuning."""

    patients: int
    segments: int
    segment_size: int
    records: int
    balanced: bool  # challenge-like records in equal class shares (a small test set then measures every class)
    pretrain: tuple[tuple[str, float], ...]  # (task, fraction of patients) of each pretraining run
    label_fracs: tuple[float, ...]  # labelled fractions of the training records fine-tuned on
    width: float
    frame_size: int
    pretrain_batch: int
    pretrain_epochs: int
    pretrain_steps: int
    seeds: tuple[int, ...]
    finetune_epochs: int
    patience: int
    finetune_batch: int
    val_size: float


SCALES = {
    # About 10 minutes on 2 cores; pretraining on this synthetic data measurably helps (see README).
    # Rhythm pretraining (afib, aflut, noise labelled in the patients), then fine-tuning on an eighth of the
    # labelled records (48), where transfer matters; 600 balanced records give 96 validation and 120 test records.
    "full": Scale(patients=24, segments=2, segment_size=131072, records=600, balanced=True,
                  pretrain=(("rhythm", 1.0),), label_fracs=(0.125,), width=0.125, frame_size=2048,
                  pretrain_batch=64, pretrain_epochs=3, pretrain_steps=30, seeds=(1, 2, 3), finetune_epochs=15,
                  patience=15, finetune_batch=16, val_size=0.2),
    # Minutes: the scaled-down run of the test suite (checks the flow, not the margin).
    "tiny": Scale(patients=6, segments=1, segment_size=65536, records=120, balanced=False,
                  pretrain=(("beat", 0.5), ("beat", 1.0)), label_fracs=(0.5,), width=0.125, frame_size=1024,
                  pretrain_batch=16, pretrain_epochs=1, pretrain_steps=4, seeds=(1, 2), finetune_epochs=2, patience=2,
                  finetune_batch=32, val_size=0.2),
}


def build_parser() -> argparse.ArgumentParser:
    """Options of the demo."""
    parser = argparse.ArgumentParser(prog="launch/demo.py", description=__doc__.split("\n\n")[0],
                                     epilog="Outputs: WORKDIR/{icentia,store,challenge,challenge.npz,runs,reports}"
                                            " (and runs-real, reports-real with --real).")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where everything goes (default: demo/, or demo/seeds_4_5_6 with --seeds 4,5,6: a "
                             "seed set's tables never mix with another's)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full",
                        help="full (default, ~10 min on 2 cores) or tiny (the test suite's, a few minutes)")
    parser.add_argument("--real", action="store_true",
                        help="fine-tune on real challenge records instead (after the synthetic pretraining)")
    parser.add_argument("--records", type=Path, default=DEFAULT_REAL,
                        help=f"challenge records for --real (default: {DEFAULT_REAL})")
    parser.add_argument("--seeds", type=argparse_type(parse_seeds), default=None,
                        help="fine-tuning seeds, e.g. 0,1,2 (default: the scale's, 1,2,3 for full)")
    parser.add_argument("--local", action="store_true", help="never use SLURM, even when a cluster answers")
    parser.add_argument("--slurm", action="store_true",
                        help="submit to the SLURM cluster that answers even when it is not the project's test "
                             "cluster (tests/cluster/slurm.sh); by default only that one is used")
    parser.add_argument("--fresh", action="store_true", help="delete WORKDIR first")
    return parser


def is_test_cluster() -> bool:
    """True when SLURM's configuration is the one ``tests/cluster/slurm.sh`` writes (its cluster name)."""
    try:
        text = slurm_conf_path().read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.replace(" ", "") == f"ClusterName={TEST_CLUSTER_NAME}" for line in text.splitlines())


def slurm_answers() -> bool:
    """True when SLURM's commands are here and its controller answers with a usable node (test or real cluster)."""
    if not slurm_available() or not shutil.which("sinfo"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and any(s in proc.stdout for s in ("idle", "mix", "alloc"))


class Demo:
    """Runs the stages in order, printing each with its duration."""

    def __init__(self, workdir: Path, scale: Scale, local: bool, any_slurm: bool = False) -> None:
        self.w, self.s = workdir.resolve(), scale
        self.use_slurm = not local and (any_slurm or is_test_cluster()) and slurm_answers()
        self.cluster_args = [] if self.use_slurm else ["--local"]
        self.env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.stage_no = 0

    def run(self, title: str, cmd: list[str], done: bool = False) -> None:
        """Print the stage, then run ``cmd`` (streaming its output) unless its output is ``done`` already."""
        self.stage_no += 1
        stage = f"stage [{self.stage_no}] {title}"
        try:  # a Ctrl-C anywhere in the stage, even before its command starts, names the stage
            print(f"\n=== [{self.stage_no}] {title}", flush=True)
            if done:
                print("    already done, skipped", flush=True)
                return
            print("    $ " + " ".join(_shorten(c, self.w) for c in cmd), flush=True)
            start = time.monotonic()
            returncode = self._stage(stage, cmd)
        except KeyboardInterrupt:
            raise DemoInterrupted(stage) from None
        if returncode != 0:
            raise ConfigError(f"stage '{title}' failed (exit {returncode}); fix the cause and run the demo "
                              f"again: finished stages are skipped")
        print(f"    ({time.monotonic() - start:.0f} s)", flush=True)

    def _stage(self, stage: str, cmd: list[str]) -> int:
        """Run one stage's command in its own session, relaying its output; on Ctrl-C stop it as a terminal would
        (SIGINT to its process group), cancel a SLURM job it submitted, drop its output and raise DemoInterrupted."""
        proc: subprocess.Popen[str] | None = None
        relay: _Relay | None = None
        try:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", start_new_session=True)
            relay = _Relay(proc)
            return proc.wait()
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
            cancelled = ""
            if relay is not None:
                relay.silence()
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                proc.wait()
            if relay is not None and relay.slurm_job:
                subprocess.run(["scancel", relay.slurm_job], capture_output=True, timeout=60)
                cancelled = f", its SLURM job {relay.slurm_job} cancelled"
            raise DemoInterrupted(f"{stage}{cancelled}") from None
        finally:
            if relay is not None:
                relay.join()

    def data(self, module: str, *args: str) -> list[str]:
        """Command line of ``python -m MODULE ARGS``."""
        return [sys.executable, "-m", module, *args]

    def synthetic_inputs(self) -> None:
        """Stages 1-3: synthetic Icentia11k patients, their shard store."""
        s, raw, store = self.s, self.w / "icentia", self.w / "store"
        self.run(f"synthesise {s.patients} Icentia11k-format patients ({s.segments} x {s.segment_size} samples)",
                 self.data("ecg_hpc.data", "synth-icentia", "--dst", str(raw), "--patients", str(s.patients),
                           "--segments", str(s.segments), "--segment-size", str(s.segment_size), "--seed", "0"),
                 done=(raw / f"{s.patients - 1:05d}_batched_lbls.pkl.gz").is_file())
        self.run("convert them to the shard store",
                 self.data("ecg_hpc.data", "convert-icentia", "--src", str(raw), "--dst", str(store),
                           "--workers", "2"))

    def challenge(self, src: Path | None, npz: Path) -> None:
        """Synthesise (when ``src`` is None) and prepare challenge records."""
        s = self.s
        if src is None:
            src = self.w / "challenge"
            self.run(f"synthesise {s.records} challenge-format records",
                     self.data("ecg_hpc.data", "synth-physionet", "--dst", str(src), "--records", str(s.records),
                               "--seed", "1", *(["--balanced"] if s.balanced else [])),
                     done=(src / "REFERENCE.csv").is_file())
        self.run(f"prepare the challenge arrays from {src}",
                 self.data("ecg_hpc.data", "prepare-physionet", "--src", str(src), "--dst", str(npz)))

    def pretrain(self) -> list[Path]:
        """Pretrain each (task, patient fraction) of the scale with two Horovod workers; return the run dirs."""
        s, runs = self.s, []
        for task, frac in s.pretrain:
            job_dir = self.w / "runs" / "pretrain" / job_dir_name(task, "resnet18", s.frame_size, frac, seed=0)
            where = "the test SLURM" if self.use_slurm else "local worker processes"
            self.run(f"pretrain {task} task on {frac:.0%} of the patients, 2 Horovod workers on {where}",
                     [sys.executable, "launch/pretrain.py", *self.cluster_args, "--nodes", "1", "--tasks", "2",
                      "--time", "30", "--store", str(self.w / "store"), "--task", task, "--frac", str(frac),
                      "--width", str(s.width), "--frame-size", str(s.frame_size),
                      "--batch-size", str(s.pretrain_batch), "--epochs", str(s.pretrain_epochs),
                      "--steps-per-epoch", str(s.pretrain_steps), "--seed", "0", "--job-dir", str(job_dir),
                      "--follow"],
                     done=is_done(job_dir))
            runs.append(job_dir)
        return runs

    def finetune(self, npz: Path, pretrain_runs: list[Path], sweep_dir: Path) -> None:
        """Plan and run the fine-tuning sweep: random init plus each pretrained checkpoint, on each labelled
        fraction, over the seeds."""
        s = self.s
        labels = ",".join(f"{f:g}" for f in s.label_fracs)
        self.run(f"fine-tune: random + {len(pretrain_runs)} checkpoints x labelled fractions {labels} x "
                 f"{len(s.seeds)} seeds (one job array)",
                 [sys.executable, "launch/finetune.py", *self.cluster_args, "--data", str(npz),
                  "--pretrain", *map(str, pretrain_runs), "--width", str(s.width), "--seeds",
                  ",".join(map(str, s.seeds)), "--label-fracs", labels, "--epochs", str(s.finetune_epochs),
                  "--patience", str(s.patience),
                  "--batch-size", str(s.finetune_batch), "--val-size", str(s.val_size),
                  "--sweep-dir", str(sweep_dir), "--time", "60", "--cpus-per-task", "1", "--follow"])

    def report(self, runs: Path, out: Path) -> None:
        """The paper's tables and figures from the run directories."""
        self.run("report", self.data("analysis.report", "--runs", str(runs), "--out", str(out), "--quiet",
                                     "--summary", str(out / SUMMARY)))


class DemoInterrupted(Exception):
    """Ctrl-C stopped the demo; the message names the stage."""


class _Relay:
    """Copies a stage's output to ours line by line until silenced; notes the id of a SLURM job it submits."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.slurm_job: str | None = None
        self._silent = threading.Event()
        self._thread = threading.Thread(target=self._copy, args=(proc,), daemon=True)
        self._thread.start()

    def _copy(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            found = re.match(r"submitted slurm job (\d+)", line)
            self.slurm_job = found.group(1) if found else self.slurm_job
            if not self._silent.is_set():
                sys.stdout.write(line)
                sys.stdout.flush()

    def silence(self) -> None:
        """Drop the rest of the output (what a stopped stage prints about stopping)."""
        self._silent.set()

    def join(self) -> None:
        """Wait until the output has been copied (a stage's background workers may hold it open a little longer)."""
        self._thread.join(timeout=60)


def _shorten(arg: str, workdir: Path) -> str:
    return arg.replace(str(workdir), "WORKDIR").replace(sys.executable, "python").replace(str(REPO) + "/", "")


def main(argv: list[str] | None = None) -> int:
    """Run the synthetic demo, or with ``--real`` the sweep on real records."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    scale = SCALES[args.scale]
    workdir = args.workdir or REPO / "demo"
    if args.seeds is not None:
        scale = dataclasses.replace(scale, seeds=args.seeds)
        workdir = args.workdir or workdir / ("seeds_" + "_".join(map(str, args.seeds)))
    try:
        if args.fresh and workdir.exists():
            shutil.rmtree(workdir)
        demo = Demo(workdir, scale, args.local, args.slurm)
        print(f"ecg-hpc demo ({args.scale}) in {demo.w}; jobs run on "
              f"{'the SLURM cluster' if demo.use_slurm else 'this machine (local worker processes)'}", flush=True)
        demo.synthetic_inputs()
        update_config({"store": demo.w / "store"})
        pretrained = demo.pretrain()
        if args.real:
            if not (args.records / "REFERENCE.csv").is_file():
                raise ConfigError(f"--records {args.records}: no REFERENCE.csv there (a challenge record folder)")
            npz = demo.w / "challenge-real.npz"
            demo.challenge(args.records.resolve(), npz)
            demo.finetune(npz, pretrained[-1:], demo.w / "runs-real" / "finetune")
            demo.report(demo.w / "runs-real", demo.w / "reports-real")
            out = demo.w / "reports-real"
        else:
            npz = demo.w / "challenge.npz"
            demo.challenge(None, npz)
            demo.finetune(npz, pretrained, demo.w / "runs" / "finetune")
            update_config({"runs": demo.w / "runs"})
            demo.report(demo.w / "runs", demo.w / "reports")
            out = demo.w / "reports"
    except EcgHpcError as exc:
        return user_error(exc)
    except (KeyboardInterrupt, DemoInterrupted) as exc:
        stage = f" during {exc}" if isinstance(exc, DemoInterrupted) else ""
        return interrupted(f"interrupted: the demo stopped{stage}; finished stages are kept in {workdir}; run "
                           "it again (make demo) to resume from there")
    print(f"\n{(out / SUMMARY).read_text(encoding='utf-8')}\ndemo finished in {time.monotonic() - started:.0f} s; "
          f"report and figures in {out}, these result tables in {out / SUMMARY}\n"
          f"{config_path().name} now names its store and runs: `python launch/pretrain.py --dry-run` and "
          "`python -m analysis.report` use them (activate the venv first: source .venv/bin/activate)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
