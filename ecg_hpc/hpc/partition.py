"""What a SLURM partition offers (nodes, CPUs, GPUs, memory per node), so a request is checked before it is submitted.

``Partition.query`` asks ``sinfo`` once; before that ``controller_answers`` tries a TCP connection to the
controller named in ``slurm.conf`` (a dead controller makes every SLURM command wait about 10 s, then fail).
``Partition.refusal`` names the first resource a request asks for that no node of the partition has: such a job
would pend forever (``PartitionNodeLimit``, ``PartitionConfig``); ``ecg_hpc.hpc.pending`` notices such a job that
was submitted anyway.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ecg_hpc.errors import ConfigError

DEFAULT_CTLD_PORT = 6817


def slurm_conf_path() -> Path:
    """The configuration SLURM's commands read: ``$SLURM_CONF``, else ``/etc/slurm/slurm.conf``."""
    return Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")


def controller_addresses(conf: Path) -> list[tuple[str, int]]:
    """(host, port) of each ``SlurmctldHost`` in ``conf`` (the address in parentheses when given)."""
    text = conf.read_text(encoding="utf-8", errors="replace")
    port_match = re.search(r"^\s*SlurmctldPort\s*=\s*(\d+)", text, re.M | re.I)
    port = int(port_match.group(1)) if port_match else DEFAULT_CTLD_PORT
    hosts = re.findall(r"^\s*(?:SlurmctldHost|ControlMachine)\s*=\s*([^\s#(]+)(?:\(([^)]+)\))?", text, re.M | re.I)
    return [(addr or name, port) for name, addr in hosts]


def controller_answers(timeout_s: float = 2.0) -> tuple[bool, str]:
    """Whether a SLURM controller accepts connections, and a one-line reason when it does not.

    Without a readable slurm.conf (e.g. a configless client) this cannot tell and says yes; ``sinfo`` decides.
    """
    conf = slurm_conf_path()
    try:
        addresses = controller_addresses(conf)
    except OSError:
        return True, ""
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True, ""
        except OSError:
            continue
    if not addresses:
        return True, ""
    where = ", ".join(f"{h}:{p}" for h, p in addresses)
    return False, f"the SLURM controller ({where}, from {conf}) does not answer"


def _int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def gres_gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` generic-resource string such as ``gpu:a100:4(S:0-1),shard:8`` (0 without any)."""
    counts = [int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,(\s]+)?:(\d+)", gres)]
    return sum(counts)


@dataclass(frozen=True)
class Partition:
    """The resources of one partition: the smallest node decides what a job may ask for per node."""

    name: str
    nodes: int
    cpus_per_node: int
    gpus_per_node: int
    mem_mb_per_node: int
    max_nodes_per_job: int | None

    @classmethod
    def parse(cls, sinfo_out: str, name: str | None) -> "Partition":
        """The partition ``name`` (or the default one, marked ``*``) from ``sinfo -h -o '%P|%D|%c|%m|%G|%s'``."""
        all_rows = [line.split("|") for line in sinfo_out.splitlines() if line.count("|") == 5]
        if name is None:
            defaults = [r[0] for r in all_rows if r[0].endswith("*")]
            if not defaults:
                raise ConfigError("the cluster has no default partition: give --partition")
            name = defaults[0].rstrip("*")
        rows = [r for r in all_rows if r[0].rstrip("*") == name]
        if not rows:
            known = sorted({r[0].rstrip("*") for r in all_rows})
            raise ConfigError(f"--partition {name}: no such partition (sinfo lists {', '.join(known) or 'none'})")
        limit = rows[0][5].split("-")[-1].strip()
        return cls(name=name, nodes=sum(_int(r[1]) for r in rows), cpus_per_node=min(_int(r[2]) for r in rows),
                   gpus_per_node=min(gres_gpus(r[4]) for r in rows), mem_mb_per_node=min(_int(r[3]) for r in rows),
                   max_nodes_per_job=int(limit) if limit.isdigit() else None)

    @classmethod
    def query(cls, name: str | None, timeout_s: float = 30.0) -> "Partition":
        """Ask the cluster (``sinfo``); ConfigError in one line when the controller or the partition is missing."""
        answers, reason = controller_answers()
        if not answers:
            raise ConfigError(f"{reason}: nothing was submitted (is the cluster up? tests/cluster/slurm.sh status "
                              "for the project's test cluster; --local runs on this machine)")
        cmd = ["sinfo", "-h", "-o", "%P|%D|%c|%m|%G|%s"] + (["-p", name] if name else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(f"sinfo failed ({exc}): nothing was submitted; --local runs on this machine") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"sinfo failed ({last}): nothing was submitted; --local runs on this machine")
        return cls.parse(proc.stdout, name)

    def refusal(self, nodes: int, tasks_per_node: int, gpus_per_node: int, cpus_per_task: int | None,
                mem_gb: float | None) -> str | None:
        """Why a job of this shape can never start here (one line naming the option), or None if it can."""
        where = f"partition {self.name}"
        node_limit = min(self.nodes, self.max_nodes_per_job or self.nodes)
        if nodes > node_limit:
            return f"--nodes {nodes}: {where} has {node_limit} node{'s' if node_limit != 1 else ''}"
        if gpus_per_node > self.gpus_per_node:
            fix = "; leave --gpus-per-node out (or 0)" if self.gpus_per_node == 0 else ""
            return f"--gpus-per-node {gpus_per_node}: {where} has {self.gpus_per_node} GPUs per node{fix}"
        cpus = tasks_per_node * (cpus_per_task or 1)
        if self.cpus_per_node and cpus > self.cpus_per_node:
            return (f"--tasks {tasks_per_node} x --cpus-per-task {cpus_per_task or 1} = {cpus} CPUs per node: "
                    f"{where} has {self.cpus_per_node}")
        if mem_gb and self.mem_mb_per_node and mem_gb * 1024 > self.mem_mb_per_node:
            return f"--mem {mem_gb:g}G: {where} has {self.mem_mb_per_node / 1024:.1f}G per node"
        return None

    def default_cpus_per_task(self, tasks_per_node: int) -> int:
        """The node's CPUs shared evenly among the tasks on it (at least 1)."""
        return max(1, self.cpus_per_node // max(1, tasks_per_node))
