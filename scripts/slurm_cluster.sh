#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM tests and for trying a cluster sweep:
#
#   scripts/slurm_cluster.sh up     # install slurm-wlm + munge (apt) where missing, start, wait for idle
#   scripts/slurm_cluster.sh down   # stop exactly the daemons `up` started (by their pid files)
#   scripts/slurm_cluster.sh status
#
# One node named $(hostname -s) with $(nproc) CPUs and the memory `slurmd -C` finds, one partition
# (`debug`, the default). Everything it writes lives under $RNNEXP_SLURM_STATE (default
# /var/lib/rnnexp-slurm): slurm.conf, pid files, logs, spool and state folders, munged's socket.
# /etc/slurm/slurm.conf becomes a link to that slurm.conf, so sinfo/sbatch/squeue find the cluster
# without SLURM_CONF; `down` removes the link again. An /etc/slurm/slurm.conf that is not this
# script's (a real cluster's) is never touched: `up` refuses.
# Both commands are idempotent: `up` on a running cluster only waits for the node, `down` on a
# stopped one does nothing. Needs root (slurmd runs jobs as their users).
set -euo pipefail

STATE=${RNNEXP_SLURM_STATE:-/var/lib/rnnexp-slurm}
CONF=$STATE/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
PARTITION=debug
HOST=$(hostname -s)
UP_TIMEOUT_S=${RNNEXP_SLURM_UP_TIMEOUT_S:-60}

say() { echo "slurm_cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }

# pid file -> daemon name (the process name checked before signalling, against a reused pid)
PIDFILES=("$STATE/slurmd.pid:slurmd" "$STATE/slurmctld.pid:slurmctld" "$STATE/munge/munged.pid:munged")

alive() {  # alive <pid file> <name>: the pid in the file runs a process of that name
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "${missing[*]} not installed and no apt-get to install them"
    say "installing ${missing[*]} (apt-get)"
    # another apt may hold the lock for a while (CI installs other packages too): wait for it
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null &&
             DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
        || die "apt-get install ${missing[*]} failed"
}

write_conf() {
    local cpus memory
    cpus=$(nproc)
    # RealMemory as slurmd itself measures it (a larger value would drain the node)
    memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    [ -n "$memory" ] || die "slurmd -C did not report RealMemory"
    mkdir -p "$STATE/ctld" "$STATE/spool"
    cat >"$CONF.tmp" <<EOF
# written by 'scripts/slurm_cluster.sh up' for $HOST (a one-node test cluster)
ClusterName=rnnexp
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket.2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# a process that ignores SIGTERM is killed 10 s later (requeue, scancel, time limit)
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
# a job that asks for no memory gets its share of the node, not all of it
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((memory / cpus))
EOF
    mv "$CONF.tmp" "$CONF"
}

link_conf() {
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        return 0
    fi
    [ -e "$SYSTEM_CONF" ] && die "$SYSTEM_CONF exists and is not this script's (a real cluster's?): left as it is"
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
}

start_munge() {
    alive "$STATE/munge/munged.pid" munged && return 0
    local key=/etc/munge/munge.key
    if [ ! -s "$key" ]; then  # the package creates one; make one if it did not
        mkdir -p /etc/munge
        dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
        chown munge: "$key" && chmod 0400 "$key"
    fi
    mkdir -p "$STATE/munge"
    chown munge: "$STATE/munge"
    chmod 0755 "$STATE/munge"
    runuser -u munge -- munged --socket="$STATE/munge/munge.socket.2" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed" --key-file="$key" \
        || die "munged did not start (see $STATE/munge/munged.log)"
}

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1; }

up() {
    [ "$(id -u)" = 0 ] || die "needs root (slurmd runs the jobs; apt-get installs the packages)"
    install_packages
    mkdir -p "$STATE"
    if ! alive "$STATE/slurmctld.pid" slurmctld || ! alive "$STATE/slurmd.pid" slurmd; then
        write_conf
    fi
    link_conf
    start_munge
    if ! alive "$STATE/slurmctld.pid" slurmctld; then
        # -c: a fresh cluster, no jobs recovered from an earlier 'up'
        slurmctld -c -f "$CONF" || die "slurmctld did not start (see $STATE/slurmctld.log)"
    fi
    if ! alive "$STATE/slurmd.pid" slurmd; then
        slurmd -f "$CONF" || die "slurmd did not start (see $STATE/slurmd.log)"
    fi
    local deadline=$((SECONDS + UP_TIMEOUT_S)) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state)
        case "$state" in
            idle|mixed|allocated) say "up: node $HOST $state, partition $PARTITION ($(nproc) CPUs; conf $CONF)"; return 0 ;;
            down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "node $HOST not idle after ${UP_TIMEOUT_S}s (state: ${state:-no answer}); see $STATE/slurmctld.log and $STATE/slurmd.log"
}

stop_daemon() {  # stop_daemon <pid file> <name>
    local pid i
    if ! alive "$1" "$2"; then
        rm -f "$1"
        return 0
    fi
    pid=$(cat "$1")
    kill -TERM "$pid"
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$2 ($pid) still running after 10 s: SIGKILL"
        kill -KILL "$pid"
    fi
    rm -f "$1"
    say "stopped $2 ($pid)"
}

down() {
    if alive "$STATE/slurmctld.pid" slurmctld; then
        # the cluster's own jobs first: their processes belong to slurmd's job steps
        scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
        local i
        for i in $(seq 1 40); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
    local entry
    for entry in "${PIDFILES[@]}"; do
        stop_daemon "${entry%%:*}" "${entry##*:}"
    done
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        rm -f "$SYSTEM_CONF"
    fi
}

status() {
    local entry
    for entry in "${PIDFILES[@]}"; do
        if alive "${entry%%:*}" "${entry##*:}"; then
            echo "${entry##*:}: running ($(cat "${entry%%:*}"))"
        else
            echo "${entry##*:}: not running"
        fi
    done
    alive "$STATE/slurmctld.pid" slurmctld && sinfo
    return 0
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
