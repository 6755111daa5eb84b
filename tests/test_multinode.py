"""Two nodes for real: the launcher, the sbatch script, a requeue, the fine-tuning array and the multi-node faults
on the project's two-node test SLURM (tests/cluster/multinode.sh: node1 and node2 in their own network, UTS and
mount namespaces, one task and one CPU each). Every Slurm client runs on the cluster's login node.

Each fault test changes what ONE task sees (a hosts file or an empty folder mounted in a private mount namespace of
the worker on node2, through the sbatch script's PYTHON) and checks that the job ends with one error line within a
minute and leaves no worker running.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MultinodeCluster
from tests.test_pretrain import TINY, _rank_fingerprints, store  # noqa: F401  (store: the tiny shard store fixture)

pytestmark = [pytest.mark.multinode, pytest.mark.horovod, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _sacct(cluster: MultinodeCluster, job_id: str, field: str) -> str:
    proc = cluster.run("sacct", "-X", "-n", "-P", "-j", job_id, "-o", field, timeout=60)
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def _wait_job(cluster: MultinodeCluster, job_id: str, timeout_s: float) -> str:
    """Poll until the job has left the queue; its final state from accounting."""
    deadline = time.monotonic() + timeout_s
    while cluster.run("squeue", "-h", "-j", job_id, timeout=60).stdout.strip():
        if time.monotonic() > deadline:
            cluster.run("scancel", job_id)
            pytest.fail(f"job {job_id} still queued or running after {timeout_s} s")
        time.sleep(0.5)
    for _ in range(40):  # accounting catches up within a moment
        state = _sacct(cluster, job_id, "State")
        if state.split(" ")[0] in ENDED:
            return state.split(" ")[0]
        time.sleep(0.25)
    return state


def _workers_of(job_dir: Path) -> list[int]:
    """PIDs of trainer processes still running for ``job_dir`` (anywhere on this machine)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ecg_hpc.train.pretrain" in argv and str(job_dir).encode() in argv:
            found.append(int(proc.name))
    return found


def _launch(cluster: MultinodeCluster, store: Path, job_dir: Path, *extra: str) -> tuple[int, str]:
    proc = cluster.run(sys.executable, "launch/pretrain.py", "--nodes", "2", "--time", "15", "--store", str(store),
                       "--job-dir", str(job_dir), *TINY, *extra, env=ENV, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _sbatch(cluster: MultinodeCluster, store: Path, job_dir: Path, out: Path, python: str = sys.executable,
            **env: str) -> str:
    """Submit slurm/pretrain.sbatch with TINY on 2 nodes x 1 task of all the node's CPUs, as the launcher's
    default gives (oneDNN's results depend on the thread count); its job id."""
    cpus = cluster.run("sinfo", "-h", "-o", "%c", timeout=60).stdout.strip()
    variables = dict(ENV, STORE=str(store), TASK="beat", FRAME_SIZE="256", BATCH_SIZE="8", EPOCHS="2",
                     STEPS_PER_EPOCH="30", SEED="3", JOB_DIR=str(job_dir), PYTHON=python,
                     EXTRA_ARGS="--width 0.125 --deterministic", **env)
    proc = cluster.run("sbatch", "--parsable", "-N", "2", "--ntasks-per-node=1", "--gpus-per-node=0",
                       f"--cpus-per-task={cpus}", "--time=15", f"--output={out}", "slurm/pretrain.sbatch",
                       env=variables, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _run_json(job_dir: Path) -> dict:
    return json.loads((job_dir / "run.json").read_text())


@pytest.fixture(scope="module")
def sbatch_run(multinode_cluster: MultinodeCluster, store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sbatch -N 2 slurm/pretrain.sbatch`` with TINY, uninterrupted: the reference of the other runs."""
    folder = tmp_path_factory.mktemp("multinode")
    job_dir, out = folder / "job", folder / "slurm.out"
    job_id = _sbatch(multinode_cluster, store, job_dir, out)
    assert _wait_job(multinode_cluster, job_id, 600) == "COMPLETED", out.read_text()[-4000:]
    assert _sacct(multinode_cluster, job_id, "NodeList") == "node[1-2]"
    return job_dir


def test_sbatch_script_on_two_nodes(sbatch_run: Path) -> None:
    info = _run_json(sbatch_run)
    assert info["status"] == "done" and info["epochs_done"] == 2
    assert info["world_size"] == 2 and info["hosts"] == ["node1", "node2"]
    assert info["weights_identical_across_ranks"] is True
    assert info["horovod"]["lr_scaling"] == "linear" and info["horovod"]["scaled_lr"] == pytest.approx(2e-3)


def test_launcher_on_two_nodes_requeued_by_usr2_resumes_to_the_same_weights(multinode_cluster: MultinodeCluster,
                                                                            store: Path, sbatch_run: Path,
                                                                            tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    status, output = _launch(multinode_cluster, store, job_dir)
    assert status == 0, output[-4000:]
    job_id = next(line.split()[3] for line in output.splitlines() if line.startswith("submitted slurm job"))
    rank0_log = job_dir / "logs" / f"{job_id}_0_log.out"
    deadline = time.monotonic() + 300
    while not (rank0_log.is_file() and "training epochs" in rank0_log.read_text()):
        assert time.monotonic() < deadline, "training did not start within 300 s"
        time.sleep(0.1)
    # What submitit asks SLURM to send before the time limit (--signal=USR2@...), to every task of the step.
    assert multinode_cluster.run("scancel", "--signal=USR2", job_id, timeout=60).returncode == 0
    assert _wait_job(multinode_cluster, job_id, 600) == "COMPLETED", rank0_log.read_text()[-4000:]
    info = _run_json(job_dir)
    assert info["status"] == "done" and info["epochs_done"] == 2
    assert info["world_size"] == 2 and info["hosts"] == ["node1", "node2"]
    assert [a["launcher"] for a in info["attempts"]] == ["slurm", "slurm"]
    assert [a["restart_count"] for a in info["attempts"]] == [0, 1] and info["attempts"][0]["preempted_at"]
    assert "received SIGUSR2" in rank0_log.read_text()
    # both ranks hold the same weights, and they are those of the uninterrupted run
    prints = _rank_fingerprints(job_dir)
    assert set(prints) == {"rank 0", "rank 1"} and prints["rank 0"] == prints["rank 1"] == info["weights_sha256"]
    assert info["weights_identical_across_ranks"] is True
    assert info["weights_sha256"] == _run_json(sbatch_run)["weights_sha256"]
    # one task per node: by default it gets all of its node's CPUs, and its threads follow
    cpus = int(multinode_cluster.run("sinfo", "-h", "-o", "%c", timeout=60).stdout.strip())
    (script,) = (job_dir / "logs").glob("*_submission.sh")
    assert f"#SBATCH --cpus-per-task={cpus}\n" in script.read_text() and "--kill-on-bad-exit=1" in script.read_text()
    assert info["device"] == f"CPU ({cpus} threads, from SLURM_CPUS_PER_TASK)"


def test_finetune_array_spreads_over_both_nodes_and_the_report_reads_it(multinode_cluster: MultinodeCluster,
                                                                         sbatch_run: Path, tmp_path: Path) -> None:
    from tests.test_finetune import TINY as FT_TINY, make_prepared

    data = make_prepared(tmp_path, records=48)
    runs = tmp_path / "runs"
    proc = multinode_cluster.run(sys.executable, "launch/finetune.py", "--data", str(data), "--pretrain",
                                 str(sbatch_run), "--seeds", "1,2", "--sweep-dir", str(runs / "finetune"),
                                 "--time", "15", "--follow", *FT_TINY, env=ENV, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    done = [json.loads(p.read_text()) for p in (runs / "finetune").glob("*/seed_*/run.json")]
    assert len(done) == 4 and {d["status"] for d in done} == {"done"}
    assert {d["environment"]["host"] for d in done} == {"node1", "node2"}
    report = multinode_cluster.run(sys.executable, "-m", "analysis.report", "--runs", str(runs), "--out",
                                   str(tmp_path / "reports"), "--quiet", "--resamples", "200", env=ENV)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (tmp_path / "reports" / "table1.csv").read_text()
    assert "random" in table and len(table.strip().splitlines()) == 3  # header + random + pretrained


# -- faults -------------------------------------------------------------------------------------------------------
def _node2_wrapper(tmp_path: Path, mount: str) -> str:
    """A PYTHON for the sbatch script: on node2 the worker runs with ``mount`` applied in its own mount namespace."""
    python = shlex.quote(sys.executable)
    inner = shlex.quote(f'{mount} && exec "$@"')
    script = tmp_path / "python-on-node2.sh"
    script.write_text("#!/bin/bash\n"
                      'if [ "$SLURMD_NODENAME" = node2 ]; then\n'
                      f'    exec unshare --mount --propagation private sh -c {inner} sh {python} "$@"\n'
                      "fi\n"
                      f'exec {python} "$@"\n')
    script.chmod(0o755)
    return str(script)


def _hosts_file(cluster: MultinodeCluster, tmp_path: Path, name: str, address: str | None) -> Path:
    """The cluster's hosts file with ``name`` moved to ``address`` (None: dropped)."""
    lines = [line for line in cluster.run("cat", "/etc/hosts", timeout=60).stdout.splitlines()
             if line.split()[1:] != [name]]
    path = tmp_path / "hosts"
    path.write_text("\n".join(lines + ([f"{address} {name}"] if address else [])) + "\n")
    return path


def _fails_fast(cluster: MultinodeCluster, job_id: str, job_dir: Path, out: Path, message: str) -> str:
    """The job fails within a minute of starting, prints ``message`` on one line, no traceback, no worker left."""
    state = _wait_job(cluster, job_id, 180)
    text = out.read_text()
    assert state == "FAILED", text[-4000:]
    assert int(_sacct(cluster, job_id, "ElapsedRaw")) <= 60, text[-4000:]
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert errors and all(message in line for line in errors), text[-4000:]
    assert "Traceback" not in text
    assert _workers_of(job_dir) == []
    return errors[0]


def test_a_node_name_resolving_to_loopback_fails_fast(multinode_cluster: MultinodeCluster, store: Path,
                                                      tmp_path: Path) -> None:
    hosts = _hosts_file(multinode_cluster, tmp_path, "node2", "127.0.1.1")  # Debian's default line
    job_dir, out = tmp_path / "job", tmp_path / "slurm.out"
    python = _node2_wrapper(tmp_path, f"mount --bind {hosts} /etc/hosts")
    job_id = _sbatch(multinode_cluster, store, job_dir, out, python=python)
    line = _fails_fast(multinode_cluster, job_id, job_dir, out, "name 'node2' resolves to the loopback address")
    assert "127.0.1.1" in line


def test_an_unresolvable_rendezvous_host_fails_fast(multinode_cluster: MultinodeCluster, store: Path,
                                                    tmp_path: Path) -> None:
    hosts = _hosts_file(multinode_cluster, tmp_path, "node1", None)
    job_dir, out = tmp_path / "job", tmp_path / "slurm.out"
    python = _node2_wrapper(tmp_path, f"mount --bind {hosts} /etc/hosts")
    job_id = _sbatch(multinode_cluster, store, job_dir, out, python=python)
    line = _fails_fast(multinode_cluster, job_id, job_dir, out, "rendezvous host 'node1' (rank 0's node) does not "
                                                                 "resolve on node2")
    assert "ECG_HPC_RENDEZVOUS_ADDR" in line


def test_a_job_folder_that_is_not_shared_fails_fast(multinode_cluster: MultinodeCluster, store: Path,
                                                    tmp_path: Path) -> None:
    job_dir, out = tmp_path / "job", tmp_path / "slurm.out"
    job_dir.mkdir()
    python = _node2_wrapper(tmp_path, f"mount -t tmpfs node2-local {job_dir}")  # node2's own, empty job folder
    job_id = _sbatch(multinode_cluster, store, job_dir, out, python=python,
                     ECG_HPC_SHARED_DIR_WAIT_S="10")
    line = _fails_fast(multinode_cluster, job_id, job_dir, out, f"--job-dir {job_dir}: rank 1 on node2 does not "
                                                                 f"see the file rank 0 wrote there on node1")
    assert "shares" in line


def test_a_failing_rank_ends_the_job_and_is_recorded(multinode_cluster: MultinodeCluster, store: Path,
                                                     tmp_path: Path) -> None:
    job_dir, out = tmp_path / "job", tmp_path / "slurm.out"
    python = _node2_wrapper(tmp_path, f"mount -t tmpfs empty {store}")  # the store is missing on node2 only
    job_id = _sbatch(multinode_cluster, store, job_dir, out, python=python)
    _fails_fast(multinode_cluster, job_id, job_dir, out, "not an Icentia11k store")
    info = _run_json(job_dir)
    assert (info["status"], info["failed_rank"], info["failed_host"]) == ("failed", 1, "node2")
    assert "not an Icentia11k store" in info["error"]
