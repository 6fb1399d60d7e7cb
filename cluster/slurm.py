"""`janus submit slurm`: one sbatch job that starts a Ray cluster over its nodes (head on the first, workers
on the rest, each via srun), waits until every node joined, runs the `janus` command against it, and tears
it down. Preemption: the job is requeueable and asks for SIGUSR1 some time before its limit; the signal
reaches the janus command, which checkpoints and exits 75; the script then requeues the job, and the
requeued job runs the same command, which resumes from the latest checkpoint. A `scontrol requeue` from
outside (SIGTERM to the job's processes) ends the same way.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pretrain.launch import PREEMPTED_EXIT_CODE


class SubmitError(ValueError):
    pass


@dataclass
class SlurmJob:
    command: list[str]  # the janus command line, e.g. ["janus", "pretrain", "--config", "small"]
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    partition: str = ""
    time: str = "04:00:00"
    job_name: str = "janus"
    signal_before_s: int = 300  # SIGUSR1 this long before the time limit: time to finish a step and checkpoint
    log_dir: str = "runs/slurm"
    mem: str = ""  # e.g. "64G"; empty: the partition's default
    ray_port: int = 6379
    extra_sbatch: tuple[str, ...] = ()  # further "#SBATCH" options, e.g. "--account=ml"

    def validate(self) -> None:
        if self.nodes < 1:
            raise SubmitError(f"--nodes {self.nodes}: a job needs at least 1 node")
        if self.gpus_per_node < 0 or self.cpus_per_task < 1:
            raise SubmitError("--gpus-per-node must be >= 0 and --cpus-per-task >= 1")
        if not self.command or Path(self.command[0]).name != "janus":
            raise SubmitError("give the janus command after `--`, e.g. `janus submit slurm -- janus pretrain "
                              "--config small`")
        if not re.fullmatch(r"(\d+-)?\d+(:\d\d){0,2}", self.time):
            raise SubmitError(f"--time {self.time!r}: use minutes, HH:MM:SS or D-HH:MM:SS")


def _janus_executable() -> str:
    """The janus entry point of this installation, so that every node runs the same code."""
    venv_janus = Path(sys.executable).with_name("janus")
    return str(venv_janus if venv_janus.exists() else shutil.which("janus") or "janus")


def render(job: SlurmJob) -> str:
    job.validate()
    bindir = str(Path(_janus_executable()).parent)
    command = shlex.join([_janus_executable(), *job.command[1:]])
    log_dir = str(Path(job.log_dir).resolve())
    sbatch = [f"--job-name={job.job_name}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
              f"--cpus-per-task={job.cpus_per_task}", f"--time={job.time}", "--requeue",
              f"--signal=B:USR1@{job.signal_before_s}", "--open-mode=append", f"--output={log_dir}/%x-%j.out"]
    if job.gpus_per_node:
        sbatch.append(f"--gpus-per-node={job.gpus_per_node}")
    if job.partition:
        sbatch.append(f"--partition={job.partition}")
    if job.mem:
        sbatch.append(f"--mem={job.mem}")
    sbatch += list(job.extra_sbatch)
    header = "\n".join(f"#SBATCH {opt}" for opt in sbatch)
    return f"""#!/bin/bash
{header}
# Rendered by `janus submit slurm`. Ray head on the first node, workers on the others, then the command.
set -u
export PATH={shlex.quote(bindir)}:$PATH
cd {shlex.quote(str(Path.cwd()))}
echo "janus job $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on $SLURM_JOB_NODELIST at $(date -u +%FT%TZ)"

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${{nodes[0]}}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" --overlap hostname -I | awk '{{print $1}}')
port=$(( {job.ray_port} + SLURM_JOB_ID % 1000 ))
export RAY_ADDRESS="$head_ip:$port"
ray_tmp=/tmp/ray-janus-$SLURM_JOB_ID
# Ray's token authentication with a token private to this job (every srun step and the command inherit it)
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={shlex.quote(log_dir)}/.ray-token-$SLURM_JOB_ID
(umask 077; python3 -c "import secrets; print(secrets.token_hex(32))" > "$RAY_AUTH_TOKEN_PATH")

srun --nodes=1 --ntasks=1 -w "$head" --overlap ray start --head --block --node-ip-address="$head_ip" \\
    --port="$port" --num-cpus={job.cpus_per_task} --num-gpus={job.gpus_per_node} --include-dashboard=false \\
    --temp-dir="$ray_tmp" &
ray_pids=($!)
if [ {job.nodes} -gt 1 ]; then
    srun --nodes={job.nodes - 1} --ntasks={job.nodes - 1} --exclude="$head" --overlap ray start --block \\
        --address="$RAY_ADDRESS" --num-cpus={job.cpus_per_task} --num-gpus={job.gpus_per_node} &
    ray_pids+=($!)
fi

teardown() {{  # ending the srun steps ends their Ray processes (only this job's)
    kill "${{ray_pids[@]}}" >/dev/null 2>&1
    wait "${{ray_pids[@]}}" 2>/dev/null
    rm -f "$RAY_AUTH_TOKEN_PATH"
}}

# wait (up to 5 minutes) until every node has joined the Ray cluster
for i in $(seq 300); do
    alive=$({shlex.quote(bindir)}/python -c "import ray; ray.init(address='$RAY_ADDRESS', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))" 2>/dev/null)
    [ "$alive" = "{job.nodes}" ] && break
    sleep 1
done
if [ "$alive" != "{job.nodes}" ]; then
    echo "janus: only ${{alive:-0}} of {job.nodes} nodes joined the Ray cluster at $RAY_ADDRESS" >&2
    teardown
    exit 1
fi
echo "ray cluster up: {job.nodes} node(s) at $RAY_ADDRESS"

{command} &
job_pid=$!
forward() {{ kill -USR1 "$job_pid" 2>/dev/null; }}
trap forward USR1 TERM
while true; do
    wait "$job_pid"
    rc=$?
    kill -0 "$job_pid" 2>/dev/null || break  # a trapped signal interrupts wait: wait again
done
teardown
if [ "$rc" = "{PREEMPTED_EXIT_CODE}" ]; then
    echo "janus: checkpointed after a preemption signal; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
"""


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise SubmitError(f"{cmd[0]} not found: run `janus submit slurm` on a Slurm login node (or use --dry-run)")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SubmitError(f"{' '.join(cmd[:2])} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout


def check_cluster(job: SlurmJob) -> None:
    """Refuse what this cluster cannot run: GPUs where its partition has none, more nodes than it has."""
    fmt = ["sinfo", "-h", "-o", "%D %G"] + (["-p", job.partition] if job.partition else [])
    rows = [line.split(None, 1) for line in _run(fmt).splitlines() if line.strip()]
    if not rows:
        raise SubmitError(f"sinfo lists no nodes{' in partition ' + job.partition if job.partition else ''}")
    total = sum(int(r[0]) for r in rows)
    if job.nodes > total:
        raise SubmitError(f"--nodes {job.nodes}: the partition has {total} node(s)")
    gres = " ".join(r[1] for r in rows if len(r) > 1)
    if job.gpus_per_node and "gpu" not in gres:
        raise SubmitError(f"--gpus-per-node {job.gpus_per_node}: the partition has no GPUs (sinfo Gres: "
                          f"{gres or '(null)'}); drop the flag to run on CPUs")


def submit(job: SlurmJob, dry_run: bool = False) -> str:
    script = render(job)
    if dry_run:
        return script
    check_cluster(job)
    Path(job.log_dir).mkdir(parents=True, exist_ok=True)
    path = Path(job.log_dir) / f"{job.job_name}.sbatch"
    path.write_text(script)
    out = _run(["sbatch", "--parsable", str(path)])
    return out.strip().split(";")[0]
