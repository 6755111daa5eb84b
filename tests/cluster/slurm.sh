#!/usr/bin/env bash
# A real single-node SLURM on loopback for tests, CI and the laptop demo.
#
#   tests/cluster/slurm.sh start    install (apt, when missing) and start munge, MariaDB, slurmdbd, slurmctld, slurmd
#   tests/cluster/slurm.sh status   print the daemons' state and sinfo; exit 0 only when the node is usable
#   tests/cluster/slurm.sh stop     cancel jobs, stop the daemons by their saved PIDs, remove the state folder
#
#   tests/cluster/slurm.sh state-dir  print the state folder of the running test cluster (exit 1 if none runs)
#
# State, spool, logs and PID files live under one folder per checkout, ECG_HPC_SLURM_DIR (default
# <checkout>/.cluster/slurm). Configuration goes to /etc/slurm (where the client commands look); files found there
# that this script did not write are backed up into the state folder and put back by `stop`. There is one
# /etc/slurm per machine, so one test cluster runs at a time: `status` and `start` find a running one from any
# checkout (or from the older script, state in /tmp/ecg-hpc-slurm) through the StateSaveLocation of its
# slurm.conf, `start` reuses it, and `stop` stops only this checkout's (ECG_HPC_SLURM_DIR=DIR names another).
# `stop` cancels the jobs of this cluster only, by id. Needs root; settings and pitfalls: docs/design-facts.md,
# "The single-node test SLURM". Slurm 22.05 (Debian 12).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OWN_BASE="${ECG_HPC_SLURM_DIR:-$REPO/.cluster/slurm}"
BASE="$OWN_BASE"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# Written by tests/cluster/slurm.sh"
HOST="$(hostname -s)"
PARTITION="debug"
DB_PASS="ecg-hpc-test"
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server-core mariadb-client-core)

log() { echo "[slurm.sh] $*" >&2; }
die() { echo "[slurm.sh] error: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts system daemons)"; }

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server-core)
    command -v mariadb >/dev/null || missing+=(mariadb-client-core)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${PACKAGES[*]} with apt-get (missing: ${missing[*]})"
    # Keep services from starting by themselves during the install.
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1; fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >/dev/null; } || rc=$?
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install of ${PACKAGES[*]} failed (exit $rc)"
}

pid_alive() { [ -f "$BASE/pids/$1.pid" ] && kill -0 "$(cat "$BASE/pids/$1.pid")" 2>/dev/null; }

# conf_is_ours FILE: FILE was written by this script (from any checkout).
conf_is_ours() { [ -f "$1" ] && head -1 "$1" | grep -q "^$MARK"; }

# The state folder of the cluster configured in /etc/slurm when this script wrote it: BASE of StateSaveLocation.
active_base() {
    conf_is_ours "$CONF" || return 0
    sed -n 's|^StateSaveLocation=\(.*\)/state$|\1|p' "$CONF"
}

# running_in DIR: the controller and node daemons whose PIDs DIR holds are alive.
running_in() {
    local name
    for name in slurmctld slurmd; do
        [ -f "$1/pids/$name.pid" ] && kill -0 "$(cat "$1/pids/$name.pid")" 2>/dev/null || return 1
    done
}

# Put aside /etc/slurm files this script did not write (restored by restore_configs).
backup_configs() {
    local f
    for f in "$CONF" "$DBD_CONF"; do
        if [ -e "$f" ] && ! conf_is_ours "$f"; then
            mkdir -p "$BASE/etc-backup"
            cp -p "$f" "$BASE/etc-backup/"
            log "backed up $f to $BASE/etc-backup (stop puts it back)"
        fi
    done
}

# Remove our /etc/slurm files and put back what backup_configs saved.
restore_configs() {
    local f
    for f in "$CONF" "$DBD_CONF"; do
        if [ -e "$BASE/etc-backup/$(basename "$f")" ]; then
            cp -p "$BASE/etc-backup/$(basename "$f")" "$f"
            log "restored $f"
        elif conf_is_ours "$f" && [ "$(active_base)" = "$BASE" ]; then
            rm -f "$f"
        fi
    done
    rm -rf "$BASE/etc-backup"
}

# spawn NAME CMD...: start CMD in the background (foreground mode of the daemon), save its PID.
spawn() {
    local name="$1"; shift
    "$@" >"$BASE/log/$name.out" 2>&1 &
    echo $! >"$BASE/pids/$name.pid"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
    local what="$1" secs="$2"; shift 2
    local i
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "$what did not come up within ${secs}s (logs in $BASE/log)"
}

node_line() {
    # slurmd -C prints the hardware line; keep its topology, set RealMemory to 90 % and the loopback address.
    local line mem
    line="$(slurmd -C | head -1)"
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")"
    line="$(sed -E "s/NodeName=[^ ]+/NodeName=$HOST NodeAddr=127.0.0.1/; s/RealMemory=[0-9]+/RealMemory=$((mem * 9 / 10))/; s/ UpTime=.*//" <<<"$line")"
    echo "$line"
}

write_configs() {
    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
$MARK from $REPO: single-node test cluster on loopback.
ClusterName=ecghpc
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
ReturnToService=2
MinJobAge=300
KillWait=5
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/pids/slurmctld.daemon.pid
SlurmdPidFile=$BASE/pids/slurmd.daemon.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
$(node_line)
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DBD_CONF" <<EOF
$MARK from $REPO.
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=6819
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$BASE/pids/slurmdbd.daemon.pid
LogFile=$BASE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DBD_CONF"
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        touch "$BASE/created-munge-key"  # stop removes the key it made
    fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    # munged runs as user munge, which may not reach the state folder (e.g. below a private /tmp or /root):
    # its own files go to /run/munge.
    mkdir -p /run/munge/ecg-hpc; chown munge:munge /run/munge /run/munge/ecg-hpc
    spawn munged setpriv --reuid=munge --regid=munge --clear-groups \
        munged --foreground --force --log-file=/run/munge/ecg-hpc/munged.log \
        --pid-file=/run/munge/ecg-hpc/munged.pid --seed-file=/run/munge/ecg-hpc/munged.seed
    wait_for munge 15 bash -c 'munge -n | unmunge'
}

start_mariadb() {
    # mariadb-server-core does not create its system user.
    # As root, like the other daemons: user mysql may not reach a state folder below a private /tmp or /root.
    mkdir -p "$BASE/mysql" /run/mysqld
    mariadb-install-db --no-defaults --user=root --datadir="$BASE/mysql" \
        --auth-root-authentication-method=socket --skip-test-db >"$BASE/log/mariadb-install.out" 2>&1 \
        || die "mariadb-install-db failed (see $BASE/log/mariadb-install.out)"
    spawn mariadbd mariadbd --no-defaults --user=root --datadir="$BASE/mysql" \
        --socket=/run/mysqld/mysqld.sock --skip-networking --innodb-buffer-pool-size=256M \
        --innodb-lock-wait-timeout=900
    wait_for MariaDB 60 mariadb --no-defaults --socket=/run/mysqld/mysqld.sock -e 'select 1'
    mariadb --no-defaults --socket=/run/mysqld/mysqld.sock <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start() {
    need_root
    local active
    active="$(active_base)"
    if [ -n "$active" ] && running_in "$active"; then log "already running (state in $active)"; return 0; fi
    if [ -d "$BASE/pids" ]; then stop_daemons; fi
    [ -d "$BASE" ] && restore_configs
    install_packages
    rm -rf "$BASE"
    mkdir -p "$BASE"/{pids,log,state,spool}
    backup_configs
    write_configs
    start_munge
    start_mariadb
    spawn slurmdbd slurmdbd -D
    wait_for slurmdbd 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
    spawn slurmctld slurmctld -D -i
    wait_for slurmctld 60 scontrol ping
    spawn slurmd slurmd -D
    wait_for "an idle node" 60 bash -c "sinfo -h -o %T | grep -qx idle"
    # Register the cluster in accounting (slurmctld does it on start; make sure before the first sacct).
    wait_for accounting 30 bash -c "sacctmgr -n list cluster format=cluster | grep -q ecghpc"
    log "running: partition $PARTITION on $HOST, state in $BASE"
}

stop_daemons() {
    local jobs
    if pid_alive slurmctld && [ "$(active_base)" = "$BASE" ]; then  # this cluster's jobs, by id
        jobs="$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')"
        if [ -n "${jobs// /}" ]; then
            # shellcheck disable=SC2086
            scancel --full --quiet $jobs 2>/dev/null || true
        fi
    fi
    local name pid i
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        [ -f "$BASE/pids/$name.pid" ] || continue
        pid="$(cat "$BASE/pids/$name.pid")"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$BASE/pids/$name.pid"
    done
}

stop() {
    need_root
    local active
    active="$(active_base)"
    # A cluster of the older script (its slurm.conf names no checkout) belongs to every checkout.
    if [ -z "${ECG_HPC_SLURM_DIR:-}" ] && [ -n "$active" ] && ! head -1 "$CONF" | grep -q "^$MARK from "; then
        BASE="$active"
    fi
    if [ -n "$active" ] && [ "$active" != "$BASE" ] && running_in "$active"; then
        die "the running test cluster belongs to another checkout (state in $active): stop it there," \
            "or with ECG_HPC_SLURM_DIR=$active $0 stop"
    fi
    [ -d "$BASE" ] || { log "not running"; return 0; }
    stop_daemons
    restore_configs
    if [ -e "$BASE/created-munge-key" ]; then rm -f /etc/munge/munge.key; fi
    rm -rf "$BASE"
    log "stopped"
}

state_dir() {
    local active
    active="$(active_base)"
    if [ -n "$active" ] && running_in "$active"; then echo "$active"; else return 1; fi
}

status() {
    local name ok=0 active
    active="$(active_base)"
    if [ -z "${ECG_HPC_SLURM_DIR:-}" ] && [ -n "$active" ] && running_in "$active"; then BASE="$active"; fi
    echo "state: $BASE"
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid_alive "$name"; then echo "$name: running (pid $(cat "$BASE/pids/$name.pid"))"
        else echo "$name: stopped"; ok=1; fi
    done
    if [ "$ok" = 0 ]; then sinfo; fi
    return "$ok"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    state-dir) state_dir ;;
    *) echo "usage: $0 start|stop|status|state-dir   (state folder: \$ECG_HPC_SLURM_DIR, default $OWN_BASE)" >&2
       exit 2 ;;
esac
