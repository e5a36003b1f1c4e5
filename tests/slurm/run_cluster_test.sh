#!/usr/bin/env bash
# End-to-end test of the Slurm profile on a real one-node Slurm cluster on THIS machine.
#
#   sudo tests/slurm/run_cluster_test.sh [--until RULE] [--keep]
#
# As root, on Debian/Ubuntu: installs slurm-wlm + munge when missing, writes a minimal
# slurm.conf for this node (CPUs and RealMemory of the machine, no GPU), starts munged,
# slurmctld and slurmd (only the ones not already running), waits until the node is idle,
# then runs the default pipeline from the repository root with
#
#   snakemake --profile slurm --configfile <tiny budgets> ...
#
# on a CPU-only node (NPF_SLURM_GPUS=0, so the training rules do not ask for --gpus).
# It checks every expected output, one FINISHED MLflow run per job in the sqlite store, and
# that every job went through Slurm (an sbatch job id + a Slurm log per job). On exit it
# cancels the Slurm jobs it submitted and stops only the daemons it started.
#
# Options:
#   --until RULE   stop after RULE (e.g. datasets), checks only the stages up to it
#   --keep         keep the work directory (default: removed on success)
# Environment:
#   NPF_SLURM_TEST_DIR   work/state directory (default: a new mktemp -d under /var/tmp)
#   NPF_PYTHON_BIN       directory holding python + snakemake (default: <repo>/.venv/bin)
# Exit status: 0 when every check passes. Works from any working directory.
set -euo pipefail

T0=$(date +%s)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${NPF_PYTHON_BIN:-$REPO/.venv/bin}
UNTIL=""
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --until) UNTIL=${2:?--until needs a rule name}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "[slurm-test $(date +%H:%M:%S)] $*"; }
die() { echo "[slurm-test] FAIL: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts slurmctld/slurmd/munged)"
[[ -x $BIN/snakemake && -x $BIN/python ]] || die "no snakemake/python in $BIN (set NPF_PYTHON_BIN)"
[[ -f $REPO/slurm/config.yaml ]] || die "profile $REPO/slurm/config.yaml missing"

WORK=${NPF_SLURM_TEST_DIR:-$(mktemp -d /var/tmp/npf-slurm-test.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
STATE=$WORK/slurm-state
mkdir -p "$STATE"
log "work dir: $WORK"

STARTED_PIDS=()   # "name:pid" of daemons this script started, stopped in reverse order
SUBMITTED_OUT=$WORK/snakemake.out
REMOVE_POLICY=0
RESTORE_CONF=""
OK=0

cleanup() {
    local rc=$?
    set +e
    if [[ $REMOVE_POLICY -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    # cancel Slurm jobs of this run that are still queued/running (e.g. after a failure)
    if [[ -f $SUBMITTED_OUT ]] && command -v scancel >/dev/null; then
        local ids
        ids=$(grep -o 'submitted with SLURM jobid [0-9]*' "$SUBMITTED_OUT" | awk '{print $NF}' | sort -u)
        for id in $ids; do
            if squeue -h -j "$id" -o %T 2>/dev/null | grep -qvE '^(COMPLETED|FAILED|CANCELLED|TIMEOUT)?$'; then
                log "cancelling leftover Slurm job $id"
                scancel "$id"
            fi
        done
    fi
    local i entry name pid
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        entry=${STARTED_PIDS[$i]}; name=${entry%%:*}; pid=${entry##*:}
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping $name (pid $pid)"
            kill "$pid"
            for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -0 "$pid" 2>/dev/null && { log "$name did not stop, SIGKILL"; kill -9 "$pid"; }
        fi
    done
    if [[ -n $RESTORE_CONF ]]; then cp -p "$RESTORE_CONF" /etc/slurm/slurm.conf && log "restored /etc/slurm/slurm.conf"; fi
    if [[ $OK -eq 1 && $KEEP -eq 0 && -z ${NPF_SLURM_TEST_DIR:-} ]]; then rm -rf "$WORK"; fi
    [[ $OK -eq 1 ]] || log "work dir kept for inspection: $WORK"
    log "total wall time: $(( $(date +%s) - T0 )) s"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

running() { pgrep -x "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "slurm/munge missing and no apt-get to install them"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # keep the packages from starting their services
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; REMOVE_POLICY=1
    fi
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; die "apt-get install failed"; }
    if [[ $REMOVE_POLICY -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; REMOVE_POLICY=0; fi
fi
log "$(slurmctld -V 2>/dev/null || echo 'slurm ?'), $(munged --version 2>&1 | head -1)"

# ---------------------------------------------------------------- munge
if ! running munged; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    setpriv --reuid=munge --regid=munge --init-groups munged --foreground >"$STATE/munged.out" 2>&1 &
    STARTED_PIDS+=("munged:$!")
    for _ in $(seq 1 40); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.25; done
    munge -n | unmunge >/dev/null || { cat "$STATE/munged.out"; die "munged does not work"; }
    log "started munged (pid $!)"
else
    log "munged already running: using it"
fi

# ---------------------------------------------------------------- slurm.conf + daemons
conf_of_running() {   # the -f FILE a running daemon was started with, else the default
    local pid args
    pid=$(pgrep -x "$1" | head -1)
    args=$(tr '\0' ' ' < "/proc/$pid/cmdline")
    if [[ $args =~ -f\ +([^ ]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo "${SLURM_CONF:-/etc/slurm/slurm.conf}"; fi
}

if running slurmctld; then
    SLURM_CONF=$(conf_of_running slurmctld)
    log "slurmctld already running: using its config $SLURM_CONF"
else
    running slurmd && die "slurmd runs without slurmctld; stop it first (unknown controller/config)"
    # The default path: srun inside the batch jobs reads it (SLURM_CONF does not reach them).
    # A slurm.conf not written by this script is moved aside and put back on exit.
    SLURM_CONF=/etc/slurm/slurm.conf
    mkdir -p /etc/slurm
    if [[ -f $SLURM_CONF ]] && ! grep -q '^# written by .*run_cluster_test.sh' "$SLURM_CONF"; then
        cp -p "$SLURM_CONF" "$STATE/slurm.conf.orig"
        RESTORE_CONF=$STATE/slurm.conf.orig
        log "moved the existing $SLURM_CONF aside (restored on exit)"
    fi
    NCPU=$(nproc)
    MEM=$(slurmd -C 2>/dev/null | grep -o 'RealMemory=[0-9]*' | cut -d= -f2 || true)
    [[ -n $MEM ]] || MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
    mkdir -p "$STATE/ctld" "$STATE/d"
    cat > "$SLURM_CONF" <<EOF
# written by $REPO/tests/slurm/run_cluster_test.sh
ClusterName=npftest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
ReturnToService=2
# squeue must still show finished jobs when Snakemake polls (it asks every 20-180 s)
MinJobAge=600
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $SLURM_CONF (CPUs=$NCPU RealMemory=$MEM, no GPU)"
    slurmctld -D -c -f "$SLURM_CONF" >"$STATE/slurmctld.out" 2>&1 &
    STARTED_PIDS+=("slurmctld:$!")
    log "started slurmctld (pid $!)"
fi
export SLURM_CONF   # clients (sinfo/sbatch/squeue) and, via sbatch --export=ALL, the jobs

if ! running slurmd; then
    for _ in $(seq 1 40); do scontrol ping >/dev/null 2>&1 && break; sleep 0.5; done
    slurmd -D -N localhost -f "$SLURM_CONF" >"$STATE/slurmd.out" 2>&1 &
    STARTED_PIDS+=("slurmd:$!")
    log "started slurmd (pid $!)"
else
    log "slurmd already running: using it"
fi

NODE_STATE=""
for _ in $(seq 1 60); do
    NODE_STATE=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
    [[ $NODE_STATE == idle* || $NODE_STATE == mix* ]] && break
    sleep 1
done
if [[ $NODE_STATE != idle* && $NODE_STATE != mix* ]]; then
    sinfo -R 2>&1 || true
    tail -5 "$STATE"/slurmctld.log "$STATE"/slurmd.log 2>/dev/null || true
    die "node not idle after 60 s (state: '${NODE_STATE:-none}')"
fi
log "sinfo: $(sinfo -h -N -o '%N %P %t cpus=%c mem=%m' | head -1)"
NODE_MEM=$(sinfo -h -N -o %m | head -1)

# ---------------------------------------------------------------- the pipeline
cat > "$WORK/tiny.yaml" <<EOF
results_dir: $WORK/results
reports_dir: $WORK/reports
suites: [cheetah]
tasks: {cheetah: [forward, jump]}
experts:
  seeds: [0]
  total_steps: 2000
  learning_starts: 1000
  checkpoint_every: 1000
  eval_episodes: 1
  sac: {hidden: [32, 32], batch_size: 32}
datasets: {episodes: 2, num_envs: 2, random_episodes: 1, eval_episodes: 1, weak_expert: warn}
offline:
  updates: 200
  eval_interval: 100
  eval_episodes: 1
  checkpoint_every: 100
  methods: [npf, mt]
  algos: [iql]
  iql: {actor_hidden: [32, 32], critic_hidden: [32, 32], value_hidden: [32, 32]}
evaluation: {episodes: 1, envs_per_task: 1}
EOF

# CPU-only node: no --gpus for the training rules (the documented NPF_SLURM_GPUS=0 switch).
export NPF_SLURM_GPUS=0
unset NPF_SLURM_PARTITION NPF_SLURM_GPU_PARTITION NPF_SLURM_ACCOUNT NPF_SLURM_GPU_MODEL
unset MLFLOW_TRACKING_URI   # the test checks the sqlite store under results_dir
EXTRA=()
# A node smaller than a rule's mem_mb could never run it: cap the requests to the node.
# (--set-resources on the command line replaces the profile's list, so repeat gpu=0.)
if (( NODE_MEM < 16000 )); then
    cap() { echo $(( $1 < NODE_MEM ? $1 : NODE_MEM )); }
    EXTRA+=(--set-resources "experts:gpu=0" "train_offline:gpu=0"
            "experts:mem_mb=$(cap 8000)" "datasets:mem_mb=$(cap 4000)" "pathways:mem_mb=$(cap 8000)"
            "train_offline:mem_mb=$(cap 16000)" "evaluate:mem_mb=$(cap 4000)")
    log "node has ${NODE_MEM} MB: capping mem_mb requests"
fi
[[ -n $UNTIL ]] && EXTRA+=(--until "$UNTIL")

cd "$REPO"
export PATH="$BIN:$PATH"
log "running: snakemake --profile slurm --configfile $WORK/tiny.yaml --slurm-logdir $WORK/slurm_logs --slurm-keep-successful-logs ${EXTRA[*]}"
T1=$(date +%s)
set +e
snakemake --profile slurm --configfile "$WORK/tiny.yaml" \
    --slurm-logdir "$WORK/slurm_logs" --slurm-keep-successful-logs "${EXTRA[@]}" \
    >"$SUBMITTED_OUT" 2>&1
SMK_RC=$?
set -e
T2=$(date +%s)
log "snakemake exit $SMK_RC after $(( T2 - T1 )) s (log: $SUBMITTED_OUT)"
if [[ $SMK_RC -ne 0 ]]; then
    grep -E 'Error|error:|failed|Exception' "$SUBMITTED_OUT" | tail -30 || true
    for f in "$WORK"/results/logs/*/*/*.log "$WORK"/results/logs/*/*/*/*.log; do
        [[ -f $f ]] && grep -q 'error' "$f" && { echo "--- $f"; tail -5 "$f"; }
    done
    die "snakemake failed (exit $SMK_RC)"
fi

# ---------------------------------------------------------------- checks
"$BIN/python" - "$WORK" "$SUBMITTED_OUT" "${UNTIL:-all}" <<'PY'
import re
import sqlite3
import sys
from collections import Counter
from pathlib import Path

work, out_file, until = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
R = work / "results"
tasks, methods = ["forward", "jump"], ["npf", "mt"]
# the default config's online part, inherited by tiny.yaml: MT10 reach + drawer-close, one seed
online_methods = ["sac-npf", "mt-sac", "mh-sac", "pcgrad"]
online_trained = online_methods + ["sac-npf-nopretrain"]  # the Fig. 4 grad-norm ablation run
variants = ["single-shot", "dapd-M1", "dapd-M5", "dapd-M10", "dapd-nothreshold", "dense"]
stages = {
    "experts": [f"experts/cheetah/{t}/seed0/{f}" for t in tasks for f in ("policy.pt", "metrics.json")],
    "datasets": [f"datasets/cheetah/{t}.{e}" for t in tasks for e in ("npz", "json")],
    "pathways": ["pathways/cheetah/iql/seed0/masks.pt", "pathways/cheetah/iql/seed0/masks.json"],
    "train_offline": [f"runs/cheetah/{m}-iql/seed0/{f}" for m in methods for f in ("final.pt", "metrics.csv")],
    "evaluate": [f"eval/cheetah/{m}-iql/seed0.json" for m in methods],
    "train_online": [f"online/runs/mt10/{m}/seed0/final.pt" for m in online_trained],
    "online_evaluate": [f"eval/mt10/{m}-sac/seed0.json" for m in online_methods],
    "dapd_ablation": [f"online/dapd/forward/{v}/seed0/metrics.csv" for v in variants],
    "figures_tables": [],  # checked below: PNGs + HTML tables under the work dir's reports/
}
# Slurm jobs per rule (train_online_npf runs SAC+NPF; its MLflow runs are tagged train_online)
jobs_per_rule = {"experts": 2, "datasets": 2, "pathways": 1, "train_offline": 2, "evaluate": 2,
                 "train_online": 3, "train_online_npf": 2, "online_evaluate": 4, "dapd_ablation": 6,
                 "figures_tables": 1}
# one FINISHED MLflow run per job (figures_tables: one per offline suite, cheetah)
runs_per_stage = {"experts": 2, "datasets": 2, "pathways": 1, "train_offline": 2, "evaluate": 2,
                  "train_online": 5, "online_evaluate": 4, "dapd_ablation": 6, "figures_tables": 1}
order = list(stages)
if until != "all":
    order = order[: order.index(until) + 1] if until in order else order
expected = {s: runs_per_stage[s] for s in order}
rules_run = [r for r in jobs_per_rule if r in order or (r == "train_online_npf" and "train_online" in order)]
expected_jobs = {r: jobs_per_rule[r] for r in rules_run}
failures = []

missing = [p for s in order for p in stages[s] if not (R / p).is_file()]
if "figures_tables" in order:
    pngs, html = list((work / "reports" / "figures").glob("*.png")), list((work / "reports" / "tables").glob("*.html"))
    if not pngs or not html:
        missing.append(f"reports: {len(pngs)} figures, {len(html)} tables")
if missing:
    failures.append(f"missing outputs: {missing}")
else:
    print(f"outputs: all {sum(len(stages[s]) for s in order)} expected files exist")

db = R / "mlflow.db"
if not db.is_file():
    failures.append(f"no MLflow store at {db}")
else:
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT r.run_uuid, r.status, t.value FROM runs r "
        "LEFT JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'npf.stage'").fetchall()
    finished = Counter(stage for _, status, stage in rows if status == "FINISHED")
    other = [(stage, status) for _, status, stage in rows if status != "FINISHED"]
    print(f"mlflow: {len(rows)} runs, FINISHED per stage: {dict(finished)}")
    if other:
        failures.append(f"runs not FINISHED: {other}")
    if dict(finished) != expected:
        failures.append(f"FINISHED runs per stage {dict(finished)} != one per job {expected}")

text = out_file.read_text()
subs = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.", text)
n_jobs = sum(expected_jobs.values())
print(f"slurm: {len(subs)} sbatch submissions, job ids {sorted(int(s[1]) for s in subs)}")
if len(subs) != n_jobs or len({s[1] for s in subs}) != n_jobs:
    failures.append(f"expected {n_jobs} distinct Slurm jobs, saw {len(subs)}")
# which rule each submission ran: the "rule X:" header Snakemake prints before "jobid: N"
rule_of = dict((jobid, rule) for rule, jobid in re.findall(r"^rule (\w+):\n(?:\s+.*\n)*?\s+jobid: (\d+)", text, re.M))
per_rule = Counter(rule_of.get(s[0], "?") for s in subs)
if dict(per_rule) != expected_jobs:
    failures.append(f"Slurm jobs per rule {dict(per_rule)} != {expected_jobs}")
logs = [Path(s[2]) for s in subs]
absent = [str(p) for p in logs if not p.is_file()]
if absent:
    failures.append(f"Slurm job logs missing: {absent}")
else:
    print(f"slurm: {len(logs)} job logs under {work / 'slurm_logs'}")
local_exec = re.findall(r"^localrule (\w+):", text, re.M)
if set(local_exec) - {"all"}:
    failures.append(f"rules ran locally instead of through Slurm: {local_exec}")
if "--gpus" in text:
    failures.append("a job asked for --gpus on the CPU-only node")

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"OK: {n_jobs} jobs through Slurm, stages {order}")
PY
OK=1
log "PASS: pipeline wall time $(( T2 - T1 )) s (snakemake --profile slurm, ${UNTIL:-full DAG})"
