#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the tests (root; Debian's slurmctld, slurmd,
# slurm-client and munge: `make system-deps`). Idempotent: a cluster that answers is left as it is.
# Its files live in $GS_SLURM_DIR (default /tmp/googlenet-study-slurm); clients find it through
# SLURM_CONF=$GS_SLURM_DIR/slurm.conf. Prints that path on success; exits non-zero with the reason.
set -euo pipefail
DIR=${GS_SLURM_DIR:-/tmp/googlenet-study-slurm}
export SLURM_CONF=$DIR/slurm.conf
HOST=$(hostname -s)
# CPUs the node offers, more than this machine's 2 cores (SlurmdParameters=config_overrides: slurmd takes the
# configured count, not the hardware's): two copies of the suite side by side each run their 2-task array at
# once instead of one copy's array waiting for the other's, which the preemption test cannot tell from a bug.
CPUS=${GS_SLURM_CPUS:-4}

if [ -f "$SLURM_CONF" ] && timeout 10 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
  echo "$SLURM_CONF"; exit 0
fi
for tool in munged slurmctld slurmd sbatch; do
  command -v "$tool" >/dev/null || { echo "no $tool: apt-get install slurmctld slurmd slurm-client munge" >&2; exit 3; }
done
[ "$(id -u)" = 0 ] || { echo "Slurm's daemons need root" >&2; exit 3; }

mkdir -p "$DIR/state" "$DIR/spool" /run/munge
chown munge:munge /run/munge
if ! pgrep -u munge -x munged >/dev/null; then
  [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  runuser -u munge -- munged
fi

# Minimal: no cgroups (linuxproc tracks the processes, no task binding, no accounting).
cat > "$SLURM_CONF" <<CONF
ClusterName=googlenet-study-test
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 )) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# Daemons of an earlier start that no longer answer: ended by their pid file, if the pid is still theirs.
for daemon in slurmctld slurmd; do
  pid=$(cat "$DIR/$daemon.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$daemon" ]; then kill "$pid"; sleep 1; fi
done
slurmctld -f "$SLURM_CONF" -i   # -i: ignore state left by an earlier cluster in $DIR
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if timeout 5 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
    echo "$SLURM_CONF"; exit 0
  fi
  sleep 0.5
done
echo "Slurm did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log:" >&2
tail -5 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
exit 4
