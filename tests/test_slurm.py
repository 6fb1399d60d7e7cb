"""`janus submit slurm` against a real one-node Slurm (slurm-wlm + munge, installed when absent, started
for these tests and stopped after): a tiny pretraining, requeued mid-run with `scontrol requeue`, completes
from its checkpoint at the expected final step (one job for both: each Slurm job costs a minute or more here)."""

import json
import os
import subprocess
import sys
import time

import pytest

from cluster.local_slurm import LocalSlurm

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a local Slurm cluster needs root")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    subprocess.run(["scancel", "--user=root"], env=cluster.env, capture_output=True)
    time.sleep(2)
    cluster.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory, nmt_dir, tokenizer):
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards

    out = tmp_path_factory.mktemp("slurm-shards")
    write_block_shards(list(read_documents([nmt_dir / "train.src"]))[:4000], tokenizer.path, out, seq_len=100,
                       docs_per_shard=1000, workers=1)
    return [f"shards={out}", f"tokenizer={tokenizer.path}"]


def _submit(slurm, tmp_path, args: list[str]) -> str:
    cmd = [sys.executable, "-m", "cluster.cli", "submit", "slurm", "--cpus-per-task", "2", "--time", "20",
           "--log-dir", str(tmp_path / "logs"), "--", "janus", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=slurm.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("submitted batch job ")
    return done.stdout.split()[3]


def _wait_state(slurm, job_id, states, timeout=420):
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = slurm.job(job_id)
        if info.get("JobState") in states:
            return info
        time.sleep(1)
    raise AssertionError(f"job {job_id} stuck in {slurm.job(job_id).get('JobState')}")


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_requeued_job_resumes_from_its_checkpoint_and_finishes(slurm, data, tmp_path):
    from pretrain import checkpoint

    run_dir = tmp_path / "requeued"
    job = _submit(slurm, tmp_path, ["pretrain", "--config", "tiny", *data, f"run_dir={run_dir}", "max_steps=60",
                                    "checkpoint_every=5"])
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 12):
        time.sleep(0.5)
    assert metrics.exists(), (tmp_path / "logs" / f"janus-{job}.out").read_text()[-3000:]
    requeue = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, env=slurm.env)
    assert requeue.returncode == 0, requeue.stderr
    info = _wait_state(slurm, job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=600)
    log = (tmp_path / "logs" / f"janus-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert "ray cluster up: 1 node(s)" in log
    assert int(info["Restarts"]) >= 1
    assert "(restart 1)" in log and "resuming from step" in log
    assert [m["step"] for m in _metrics(run_dir)] == list(range(1, 61))
    assert checkpoint.latest_complete(run_dir / "checkpoints") == 60


def test_bad_submissions_are_refused_in_one_line(slurm, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "cluster.cli", "submit", "slurm", *args], capture_output=True,
                              text=True, env=slurm.env)

    for args, message in ((["--nodes", "0", "--", "janus", "pretrain"], "at least 1 node"),
                          (["--gpus-per-node", "1", "--", "janus", "pretrain"], "has no GPUs"),
                          (["--nodes", "3", "--", "janus", "pretrain"], "the partition has 1 node"),
                          (["--", "python", "train.py"], "give the janus command")):
        done = run(*args)
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    script = run("--dry-run", "--nodes", "4", "--gpus-per-node", "8", "--", "janus", "pretrain").stdout
    for line in ("#SBATCH --nodes=4", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300",
                 "#SBATCH --gpus-per-node=8", "ray start --head", "scontrol requeue"):
        assert line in script
