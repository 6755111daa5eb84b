"""Checks a multi-node job makes before Horovod starts: node name, rendezvous host, one shared job folder.

Real name resolution of this machine (``localhost`` is loopback, names under ``.invalid`` never resolve,
RFC 6761); the two-node cluster provokes each fault for real in tests/test_multinode.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ecg_hpc.errors import ConfigError
from ecg_hpc.train import environments, rendezvous
from ecg_hpc.train import preflight


def test_a_node_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'localhost' resolves to the loopback address 127\.0\.0\.1"):
        preflight.check_node_name("localhost")
    with pytest.raises(ConfigError, match="does not resolve"):
        preflight.check_node_name("no-such-node.invalid")
    preflight.check_node_name("192.0.2.10")  # a literal address resolves to itself


def test_the_rendezvous_host_must_resolve() -> None:
    with pytest.raises(ConfigError, match=f"'gpu01.invalid'.*does not resolve on node2.*{rendezvous.ADDR_ENV}"):
        preflight.check_rendezvous_host("gpu01.invalid", "node2", rendezvous.ADDR_ENV)
    with pytest.raises(ConfigError, match="resolves to loopback on node2"):
        preflight.check_rendezvous_host("localhost", "node2", rendezvous.ADDR_ENV)
    preflight.check_rendezvous_host("localhost", "localhost", rendezvous.ADDR_ENV)  # rank 0's own node
    preflight.check_rendezvous_host("192.0.2.10", "node2", rendezvous.ADDR_ENV)


def test_the_rendezvous_address_can_be_overridden() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "gpu[01-02]",
           "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_PROCID": "1", "SLURM_NODEID": "1", "SLURM_LOCALID": "0"}
    job = environments.detect(env)
    assert rendezvous.rendezvous_address(job, environ={}) == "gpu01"
    assert rendezvous.rendezvous_address(job, environ={rendezvous.ADDR_ENV: "10.1.2.3"}) == "10.1.2.3"


def test_other_ranks_wait_for_rank0s_token_in_the_job_folder(tmp_path: Path) -> None:
    folder = tmp_path / "job"
    with pytest.raises(ConfigError, match=r"--job-dir .*: rank 1 on node2 does not see the file rank 0 wrote "
                                          r"there on node1 within 0 s.*shares"):
        preflight.wait_for_shared_token(folder, "12", 0, 1, "node2", "node1", timeout_s=0.3)
    # rank 0 writes it a moment later: the other rank sees it and goes on
    writer = threading.Timer(0.3, preflight.write_shared_token, (folder, "12", 0, "node1"))
    writer.start()
    began = time.monotonic()
    preflight.wait_for_shared_token(folder, "12", 0, 1, "node2", "node1", timeout_s=10)
    assert time.monotonic() - began < 5
    # a token of another start of the job does not count
    with pytest.raises(ConfigError):
        preflight.wait_for_shared_token(folder, "12", 1, 1, "node2", "node1", timeout_s=0.3)
