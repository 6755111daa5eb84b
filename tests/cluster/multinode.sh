#!/usr/bin/env bash
# A real two-node SLURM on this one machine, for the multi-node tests and CI.
#
#   tests/cluster/multinode.sh start           install (apt, when missing) and start the cluster; returns when
#                                              every compute node is idle and accounting answers
#   tests/cluster/multinode.sh status          daemons and sinfo; exit 0 only when every daemon runs
#   tests/cluster/multinode.sh exec CMD...     run CMD on the login node "head" (sbatch, sacct, launch/*.py,
#                                              submitit): every Slurm client must run in there
#   tests/cluster/multinode.sh on NODE CMD...  run CMD on head, node1, node2, ...
#   tests/cluster/multinode.sh stop            cancel the jobs, stop everything by its saved PID, end what is
#                                              left in the cluster's namespaces (by PID), delete them, remove
#                                              the state folder and the route guard
#
# Each node is a network namespace with its own address, plus (for every command entered through `on`) its own
# UTS namespace with the node's hostname and a private mount namespace with the cluster's hosts file over
# /etc/hosts. "head" holds a bridge into which every node has a veth pair, slurmctld, slurmdbd and MariaDB (on
# head's own loopback); node1..N run slurmd. munged runs on a path socket under the state folder (a path socket
# reaches every network namespace). The file system is shared, as on a cluster. Slurm reads its configuration
# through SLURM_CONF only: /etc/slurm, /etc/munge, the default munge socket and ports 6817-6819 stay untouched,
# so the single-node test cluster (tests/cluster/slurm.sh) runs beside this one.
#
# Per checkout: state under <checkout>/.cluster/multinode (ECG_HPC_MULTINODE_DIR overrides); the namespace names
# and the 10.77.K.0/24 range are keyed by the checkout's path, so two checkouts do not clash.
# Guard: while the cluster exists, the root namespace routes its range to `unreachable`, so a Slurm client run
# outside the cluster's namespaces fails at once ("No route to host") instead of sending packets out of the
# default route; nothing is addressed outside the range this script made. Needs root. Facts and pitfalls:
# docs/design-facts.md ("Two SLURM nodes on one machine"). Slurm 22.05 (Debian 12).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
BASE="${ECG_HPC_MULTINODE_DIR:-$ROOT/.cluster/multinode}"
NODES="${ECG_HPC_MULTINODE_NODES:-2}"
KEY="$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
NS="ecgmn$((KEY % 100000))-"          # namespaces: ${NS}head, ${NS}node1, ...
SUBNET="10.77.$((KEY % 254 + 1))"     # head .1, nodeI .(10+I)
CTLD_PORT=7817 SLURMD_PORT=7818 DBD_PORT=7819 DB_PORT=7820   # inside the cluster's namespaces only
CLUSTER=ecgmulti
DB_PASS=ecg-hpc-multinode
CONF="$BASE/etc/slurm.conf"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server-core mariadb-client-core)

log() { echo "[multinode.sh] $*" >&2; }
die() { echo "[multinode.sh] error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
nodes() { seq 1 "$NODES" | sed 's/^/node/'; }
node_ip() { echo "$SUBNET.$((10 + ${1#node}))"; }

# Refuse to run from inside one of the cluster's namespaces: stop would end its own caller.
need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (namespaces, routes, daemons)"
    local f me; me="$(readlink /proc/self/ns/net)"
    for f in /run/netns/"$NS"*; do
        [ -e "$f" ] && [ "$me" = "net:[$(stat -L -c %i "$f")]" ] && die "run this outside the cluster's namespaces"
    done
    return 0
}

install_packages() {
    local cmd missing=0
    for cmd in munged slurmctld slurmd sbatch slurmdbd mariadbd mariadb; do
        command -v "$cmd" >/dev/null || missing=1
    done
    [ "$missing" = 0 ] && return 0
    log "installing ${PACKAGES[*]} with apt-get"
    local policy=/usr/sbin/policy-rc.d created=0 rc=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >/dev/null; } || rc=$?
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install of ${PACKAGES[*]} failed (exit $rc)"
}

# A process counts as alive when it exists and is not a zombie (kill -0 succeeds on zombies).
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; }
pid_of() { cat "$BASE/pids/$1.pid" 2>/dev/null; }
running() { local pid; pid="$(pid_of "$1")" && [ -n "$pid" ] && alive "$pid"; }

# The entry into a node: its network namespace, then fresh UTS and mount namespaces with the node's hostname and
# the cluster's hosts file. Every step execs, so the PID of `on NODE daemon &` is the daemon's own.
write_entry() {
    cat >"$BASE/bin/on" <<EOF
#!/bin/bash
# on NODE CMD...: run CMD on node NODE of the test cluster in $BASE
[ \$# -ge 2 ] || { echo "usage: \$0 NODE CMD..." >&2; exit 2; }
node="\$1"; shift
[ -e "/run/netns/$NS\$node" ] || { echo "\$0: no node \$node in the test cluster" >&2; exit 2; }
export SLURM_CONF="$CONF"
exec nsenter --net="/run/netns/$NS\$node" unshare --uts --mount --propagation private \\
    sh -c 'hostname "\$0" && mount --bind "$BASE/etc/hosts" /etc/hosts && exec "\$@"' "\$node" "\$@"
EOF
    chmod +x "$BASE/bin/on"
}
on() { "$BASE/bin/on" "$@"; }

# Namespaces, a bridge on head, one veth pair per node; the guard route in the root namespace first.
make_network() {
    local node
    if ip route show "$SUBNET.0/24" | grep -qv '^unreachable'; then
        die "$SUBNET.0/24 is already routed on this machine; set ECG_HPC_MULTINODE_DIR elsewhere or free the range"
    fi
    ip route replace unreachable "$SUBNET.0/24"
    ip netns add "${NS}head"
    ip -n "${NS}head" link set lo up
    ip -n "${NS}head" link add br0 type bridge
    ip -n "${NS}head" addr add "$SUBNET.1/24" dev br0
    ip -n "${NS}head" link set br0 up
    for node in $(nodes); do
        ip netns add "$NS$node"
        ip -n "$NS$node" link set lo up
        ip -n "${NS}head" link add "v$node" type veth peer name eth0 netns "$NS$node"
        ip -n "${NS}head" link set "v$node" master br0 up
        ip -n "$NS$node" addr add "$(node_ip "$node")/24" dev eth0
        ip -n "$NS$node" link set eth0 up
    done
}

write_configs() {
    local node hw mem
    { echo "127.0.0.1 localhost"; echo "$SUBNET.1 head"
      for node in $(nodes); do echo "$(node_ip "$node") $node"; done; } >"$BASE/etc/hosts"
    # Every node reports this machine's topology; the memory is shared out between the nodes.
    hw="$(slurmd -C | head -1)"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    hw="$(sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=.*//' <<<"$hw")"
    {
        cat <<EOF
# Written by tests/cluster/multinode.sh: $NODES compute nodes in network namespaces on $SUBNET.0/24.
ClusterName=$CLUSTER
SlurmctldHost=head($SUBNET.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$BASE/munge/munge.sock,cred_expire=10
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=head
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=socket=$BASE/munge/munge.sock
ReturnToService=2
MinJobAge=300
KillWait=5
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/%n
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd-%n.log
EOF
        for node in $(nodes); do
            echo "NodeName=$node NodeHostname=$node NodeAddr=$(node_ip "$node") $hw RealMemory=$((mem * 9 / 10 / NODES))"
        done
        echo "PartitionName=debug Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
    } >"$CONF"
    cat >"$BASE/etc/slurmdbd.conf" <<EOF
# Written by tests/cluster/multinode.sh.
AuthType=auth/munge
AuthInfo=socket=$BASE/munge/munge.sock
DbdAddr=$SUBNET.1
DbdHost=head
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$BASE/run/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$BASE/etc/slurmdbd.conf"
}

# spawn NAME CMD...: start CMD (a daemon in its foreground mode) in the background and save its PID.
spawn() {
    local name="$1"; shift
    "$@" >"$BASE/log/$name.out" 2>&1 &
    echo $! >"$BASE/pids/$name.pid"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds, or fail naming WHAT.
wait_for() {
    local what="$1" secs="$2" i; shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${secs}s (logs in $BASE/log)"
}

nodes_idle() { [ "$(on head sinfo -h -N -o %T 2>/dev/null | grep -cx idle)" = "$NODES" ]; }

start_daemons() {
    local node sock="$BASE/munge/munge.sock" db="$BASE/mysql"
    mungekey --create --keyfile="$BASE/munge/munge.key" >/dev/null
    chmod 0400 "$BASE/munge/munge.key"
    spawn munged munged --foreground --socket="$sock" --key-file="$BASE/munge/munge.key" \
        --log-file="$BASE/log/munged.log" --pid-file="$BASE/run/munged.pid" --seed-file="$BASE/munge/munged.seed"
    wait_for munge 15 bash -c "munge --socket='$sock' -n | unmunge --socket='$sock'"

    mariadb-install-db --no-defaults --user=root --datadir="$db/data" --auth-root-authentication-method=socket \
        --skip-test-db >"$BASE/log/mariadb-install.out" 2>&1 \
        || die "mariadb-install-db failed (see $BASE/log/mariadb-install.out)"
    spawn mariadbd "$BASE/bin/on" head mariadbd --no-defaults --user=root --datadir="$db/data" \
        --socket="$db/mysqld.sock" --pid-file="$BASE/run/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
    wait_for MariaDB 60 mariadb --no-defaults --socket="$db/mysqld.sock" -e 'select 1'
    mariadb --no-defaults --socket="$db/mysqld.sock" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
    spawn slurmdbd "$BASE/bin/on" head slurmdbd -D
    wait_for slurmdbd 60 on head bash -c "exec 3<>/dev/tcp/$SUBNET.1/$DBD_PORT"
    spawn slurmctld "$BASE/bin/on" head slurmctld -D -i -f "$CONF"
    wait_for slurmctld 60 on head scontrol ping
    for node in $(nodes); do spawn "slurmd-$node" "$BASE/bin/on" "$node" slurmd -D -f "$CONF"; done
    wait_for "$NODES idle nodes" 60 nodes_idle
    wait_for accounting 30 on head bash -c "sacctmgr -n list cluster format=cluster | grep -qw $CLUSTER"
}

start() {
    need_root
    if running slurmctld; then log "already running (state in $BASE)"; return 0; fi
    [[ "$NODES" =~ ^[0-9]+$ ]] && [ "$NODES" -ge 2 ] && [ "$NODES" -le 50 ] \
        || die "ECG_HPC_MULTINODE_NODES=$NODES: expected 2..50"
    if [ -d "$BASE" ] || compgen -G "/run/netns/$NS*" >/dev/null; then log "removing an earlier run's leftovers"; stop; fi
    install_packages
    local t0 node; t0="$(now)"
    mkdir -p "$BASE"/{bin,etc,pids,run,log,state,munge,mysql}
    for node in $(nodes); do mkdir -p "$BASE/spool/$node"; done
    echo "NODES=$NODES" >"$BASE/etc/cluster.env"
    trap 'rc=$?; if [ "$rc" != 0 ]; then log "start failed: stopping what was started"; stop; fi; exit "$rc"' EXIT
    make_network
    write_entry
    write_configs
    start_daemons
    trap - EXIT
    log "up in $(since "$t0") s: node[1-$NODES] on $SUBNET.0/24 (namespaces ${NS}*), state in $BASE"
    log "run Slurm clients inside it: $0 exec sbatch|srun|sacct|python launch/pretrain.py ..."
}

# PIDs of every process in one of the cluster's network namespaces (daemons, slurmstepd, job tasks, exec'd commands).
ns_pids() {
    local f inode p
    for f in /run/netns/"$NS"*; do
        [ -e "$f" ] || continue
        inode="$(stat -L -c %i "$f")"
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/ns/net" 2>/dev/null)" = "net:[$inode]" ] && echo "${p#/proc/}"
        done
    done
    return 0
}

end_pid() {
    local pid="$1" i
    alive "$pid" || return 0
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || return 0; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    need_root
    trap - EXIT
    local name pid f i t0; t0="$(now)"
    if running slurmctld; then
        on head scancel --full --quiet -u root 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do [ -z "$(on head squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
    fi
    for f in "$BASE"/pids/slurmd-*.pid; do
        [ -e "$f" ] || continue
        name="$(basename "$f" .pid)"; end_pid "$(pid_of "$name")"; rm -f "$f"
    done
    for name in slurmctld slurmdbd mariadbd munged; do
        pid="$(pid_of "$name")" || continue
        end_pid "$pid"; rm -f "$BASE/pids/$name.pid"
    done
    # What is still in the namespaces (job tasks and slurmstepd of a stopped slurmd, exec'd commands): by PID.
    for pid in $(ns_pids); do kill "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 30; i++)); do [ -z "$(ns_pids)" ] && break; sleep 0.1; done
    for pid in $(ns_pids); do kill -9 "$pid" 2>/dev/null || true; done
    for f in /run/netns/"$NS"*; do [ -e "$f" ] && ip netns del "${f##*/}"; done
    ip route del unreachable "$SUBNET.0/24" 2>/dev/null || true
    rm -rf "$BASE"
    log "stopped in $(since "$t0") s"
}

status() {
    local name ok=0
    [ -f "$BASE/etc/cluster.env" ] && . "$BASE/etc/cluster.env"
    for name in munged mariadbd slurmdbd slurmctld $(nodes | sed 's/^/slurmd-/'); do
        if running "$name"; then echo "$name: running (pid $(pid_of "$name"))"
        else echo "$name: stopped"; ok=1; fi
    done
    [ "$ok" = 0 ] && on head sinfo -N
    return "$ok"
}

[ -f "$BASE/etc/cluster.env" ] && . "$BASE/etc/cluster.env"   # a running cluster's node count wins
case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    exec) shift; [ $# -ge 1 ] || die "usage: $0 exec CMD..."; [ -x "$BASE/bin/on" ] || die "not running: $0 start"
          exec "$BASE/bin/on" head "$@" ;;
    on) shift; [ $# -ge 2 ] || die "usage: $0 on NODE CMD..."; [ -x "$BASE/bin/on" ] || die "not running: $0 start"
        exec "$BASE/bin/on" "$@" ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
