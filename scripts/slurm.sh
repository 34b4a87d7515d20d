#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, on 127.0.0.1 (tests/test_slurm.py, CI).
#
#   scripts/slurm.sh start | stop | status | env
#
# Daemons, all run as root from Debian's packages (apt-get install slurm-wlm slurmdbd munge
# mariadb-server): munged (authentication, its own key and socket), MariaDB + slurmdbd (job
# accounting: `sacct`, where hydra-submitit-launcher reads the state of every job), slurmctld,
# and one slurmd offering SLURM_CPUS slots. Config, state and logs live in SLURM_DIR; nothing
# touches /etc/slurm or /etc/munge. Submit to it with the clients pointed at its config:
#   eval "$(scripts/slurm.sh env)"        # SLURM_CONF
#   sbatch --wrap 'hostname'; squeue; sacct
#   python -m src.train -m hparams_search=smoke_tiny local=slurm ...   (README, "Scaling out")
#
# Settings (environment): SLURM_DIR (default .slurm/), SLURM_CPUS (2), SLURMCTLD_PORT (6817),
# SLURMD_PORT (6818), SLURMDBD_PORT (6819), SLURM_DB_PORT (MariaDB, 6820).
# The daemons listen on 127.0.0.1 where the host name resolves to loopback (listen_parameters).
# Not a production set-up: one node, no cgroups, a database password kept in SLURM_DIR.
set -euo pipefail

DIR="$(realpath -m "${SLURM_DIR:-.slurm}")"
CPUS="${SLURM_CPUS:-2}"
CTLD_PORT="${SLURMCTLD_PORT:-6817}"
D_PORT="${SLURMD_PORT:-6818}"
DBD_PORT="${SLURMDBD_PORT:-6819}"
DB_PORT="${SLURM_DB_PORT:-6820}"
HOST=127.0.0.1
CLUSTER=clfsweep
NODE="$(hostname -s)"  # slurmctld and slurmd find themselves in slurm.conf by this name
DB_SOCKET="$DIR/db/mysqld.sock"
MUNGE_SOCKET="$DIR/munge/munge.socket"
export SLURM_CONF="$DIR/etc/slurm.conf"

die() { echo "error: $*" >&2; exit 2; }

check_installed() {
  local missing=()
  for bin in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacctmgr; do
    command -v "$bin" >/dev/null || missing+=("$bin")
  done
  [[ ${#missing[@]} == 0 ]] ||
    die "SLURM not installed (no ${missing[*]}): apt-get install slurm-wlm slurmdbd munge mariadb-server"
  [[ "$(id -u)" == 0 ]] || die "the daemons run as root (slurmd starts the jobs): run this as root"
}

alive() {  # alive NAME: the daemon whose pid file is $DIR/run/NAME.pid runs
  [[ -f "$DIR/run/$1.pid" ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq 1 $((seconds * 4))); do
    if "$@" >/dev/null 2>&1; then return; fi
    sleep 0.25
  done
  die "$what did not come up within $seconds s; logs in $DIR/log"
}

secret() {  # secret FILE BYTES: a random secret kept in FILE (mode 600)
  [[ -s "$1" ]] || (umask 077; head -c "$2" /dev/urandom > "$1")
}

start_munge() {
  mkdir -p "$DIR/munge"
  chmod 755 "$DIR" "$DIR/munge"  # munged refuses a socket others cannot reach
  secret "$DIR/etc/munge.key" 1024
  alive munged && return
  munged --socket="$MUNGE_SOCKET" --key-file="$DIR/etc/munge.key" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
}

db_password() {
  [[ -s "$DIR/etc/db.password" ]] ||
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/etc/db.password")
  cat "$DIR/etc/db.password"
}

start_mariadb() {
  local options=(--no-defaults --datadir="$DIR/db" --user=root --innodb-log-file-size=8M)
  if [[ ! -d "$DIR/db/mysql" ]]; then
    mariadb-install-db "${options[@]}" --auth-root-authentication-method=socket \
      --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
  fi
  if ! alive mariadbd; then
    setsid mariadbd "${options[@]}" --bind-address="$HOST" --port="$DB_PORT" \
      --socket="$DB_SOCKET" --pid-file="$DIR/run/mariadbd.pid" \
      --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=32M --skip-name-resolve \
      < /dev/null > /dev/null 2>&1 &
    wait_for 60 MariaDB mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping
  fi
  mariadb --no-defaults --socket="$DB_SOCKET" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'$HOST' IDENTIFIED BY '$(db_password)';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$HOST';
SQL
}

listen_parameters() {
  # SLURM binds either every interface or the address the host name resolves to: the latter
  # where that is loopback. Elsewhere the daemons listen on all interfaces, and accept only
  # messages signed with this cluster's own MUNGE key.
  if [[ "$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 {print $1}')" == 127.* ]]; then
    echo "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny"
  fi
}

write_config() {
  local memory
  memory="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
  cat > "$SLURM_CONF" <<EOF
# Written by scripts/slurm.sh start (regenerated at every start).
ClusterName=$CLUSTER
SlurmctldHost=$NODE($HOST)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
$(listen_parameters)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in containers: processes are tracked through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# sacct reads job states from slurmdbd, as on a production cluster.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=$DBD_PORT
# The munge socket for talking to slurmdbd (AuthInfo covers the rest).
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# scancel sends SIGTERM, which submitit's job runner ignores; SIGKILL follows KillWait s later
# (clusters often use 30; here 1 s keeps the tests short).
KillWait=1
# Offer SLURM_CPUS slots whatever this machine has.
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=$HOST CPUs=$CPUS RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  (umask 077; cat > "$DIR/etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm.sh start (regenerated at every start).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$NODE
DbdAddr=$HOST
DbdPort=$DBD_PORT
$(listen_parameters)
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=$HOST
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(db_password)
StorageLoc=slurm_acct_db
EOF
  )
}

start_slurm() {
  mkdir -p "$DIR/state/ctld" "$DIR/state/d"
  if ! alive slurmdbd; then
    slurmdbd  # finds slurmdbd.conf next to $SLURM_CONF
    wait_for 120 slurmdbd sacctmgr -n list cluster
  fi
  if [[ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  alive slurmctld || slurmctld
  wait_for 60 slurmctld scontrol ping
  alive slurmd || slurmd
  wait_for 60 "slurmd (node $NODE)" node_ready
}

node_ready() {
  [[ "$(sinfo -h -n "$NODE" -o %t)" =~ ^(idle|mix|alloc)$ ]]
}

stop_daemons() {  # stop_daemons NAME...: TERM them together, KILL any still running 20 s later
  local pids=() pid
  for name in "$@"; do
    if alive "$name"; then pids+=("$(cat "$DIR/run/$name.pid")"); fi
    rm -f "$DIR/run/$name.pid"
  done
  [[ ${#pids[@]} == 0 ]] && return
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 80); do
    kill -0 "${pids[@]}" 2>/dev/null || break  # true while any of them runs
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  done
}

stop_all() {
  if alive slurmctld; then  # jobs would outlive slurmd: cancel them and wait for the kill
    local jobs
    mapfile -t jobs < <(squeue -h -o %A 2>/dev/null | sort -u)
    [[ ${#jobs[@]} == 0 ]] || scancel "${jobs[@]}" 2>/dev/null || true
    for _ in $(seq 1 60); do
      [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
      sleep 0.5
    done
  fi
  # slurmctld reports its last job records to slurmdbd, which writes them to MariaDB.
  stop_daemons slurmd slurmctld
  stop_daemons slurmdbd
  stop_daemons mariadbd munged
}

status() {
  for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
    if alive "$daemon"; then
      echo "$daemon running (pid $(cat "$DIR/run/$daemon.pid"))"
    else
      echo "$daemon stopped"
    fi
  done
  if alive slurmctld; then sinfo; fi
}

case "${1:-start}" in
  start)
    check_installed
    mkdir -p "$DIR/etc" "$DIR/run" "$DIR/log"
    start_munge
    start_mariadb
    write_config
    start_slurm
    echo "SLURM cluster $CLUSTER: node $NODE with $CPUS CPUs, partition debug (state in $DIR)"
    echo "Use it:  eval \"\$(scripts/slurm.sh env)\"  (stop: scripts/slurm.sh stop)"
    ;;
  stop) stop_all ;;
  status) status ;;
  env) echo "export SLURM_CONF='$SLURM_CONF'" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
