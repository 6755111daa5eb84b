"""tests/cluster/slurm.sh in a private mount and network namespace (so the machine's running test cluster and its
/etc/slurm are untouched): it backs up a foreign slurm.conf and puts it back, keeps its state in the folder it is
given, and cancels only the jobs of its own cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SLURM_SCRIPT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

FOREIGN = "# a site's own slurm.conf, not the test cluster's\nClusterName=site\nSlurmctldHost=elsewhere\n"

INSIDE = r"""
set -euo pipefail
trap '"$SCRIPT" stop >/dev/null 2>&1 || true' EXIT  # whatever happens, no daemon outlives the test
# SLURM resolves names with AI_ADDRCONFIG: the namespace needs a non-loopback IPv4 address (a veth pair whose two
# ends both stay inside it) and this host's name must resolve (a private /etc/hosts).
ip link set lo up
ip link add ecgt0 type veth peer name ecgt1
ip addr add 10.213.0.1/30 dev ecgt0
ip link set ecgt0 up; ip link set ecgt1 up
printf '127.0.0.1 localhost %s\n' "$(hostname -s)" > "$WORK/hosts"
mount --bind "$WORK/hosts" /etc/hosts
for d in /etc/slurm /etc/munge /run/munge /run/mysqld; do mkdir -p "$d"; mount -t tmpfs tmpfs "$d"; done
printf '%s' "$FOREIGN" > /etc/slurm/slurm.conf
"$SCRIPT" start
head -1 /etc/slurm/slurm.conf
"$SCRIPT" state-dir
job=$(sbatch --parsable -o /dev/null --wrap 'sleep 300')
squeue -h -o %A
"$SCRIPT" status > /dev/null && echo status-ok
"$SCRIPT" stop
trap - EXIT
cmp /etc/slurm/slurm.conf <(printf '%s' "$FOREIGN") && echo restored
[ ! -e /etc/munge/munge.key ] && echo key-removed
[ ! -e "$ECG_HPC_SLURM_DIR" ] && echo state-removed
echo "job $job"
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("slurmctld") is None,
                    reason="needs root, unshare and the SLURM daemons (tests/cluster/slurm.sh start installs them)")
def test_start_and_stop_restore_etc_slurm_and_keep_state_in_the_given_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = dict(os.environ, SCRIPT=str(SLURM_SCRIPT), FOREIGN=FOREIGN, ECG_HPC_SLURM_DIR=str(state), WORK=str(tmp_path))
    proc = subprocess.run(["unshare", "--mount", "--net", "--fork", "bash", "-c", INSIDE], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("# Written by tests/cluster/slurm.sh from ")
    assert lines[1] == str(state)
    job = lines[-1].split()[1]
    assert lines[2] == job  # the only job on the private cluster
    assert "backed up /etc/slurm/slurm.conf" in proc.stderr and "restored /etc/slurm/slurm.conf" in proc.stderr
    assert {"status-ok", "restored", "key-removed", "state-removed"} <= set(lines)
