"""`janus pretrain`: Ray + DeepSpeed ZeRO workers on real shards; the run directory resumes exactly,
whatever killed the run (SIGKILL of a worker, of the whole job, SIGTERM), and on fewer workers; one live
run at a time writes a run directory."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pretrain.config import ConfigKeyError, load_config


@pytest.fixture(scope="module")
def data(tmp_path_factory, nmt_dir, tokenizer):
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards

    out = tmp_path_factory.mktemp("pretrain-shards")
    docs = list(read_documents([nmt_dir / "train.src"]))[:6000]
    write_block_shards(docs, tokenizer.path, out, seq_len=100, docs_per_shard=1500, workers=1)
    return [f"shards={out}", f"tokenizer={tokenizer.path}"]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def _wait_for_steps(run_dir, steps, timeout=240):
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= steps):
        time.sleep(0.2)
    return metrics


def _kill_session(sid):
    """SIGKILL every process of a session: the whole job, as a lost node or Slurm's cgroup kill ends it.
    (Ray's workers sit in process groups of their own, so killpg of the driver's group would miss them.)"""
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _lock_is_held(run_dir):
    with open(run_dir / "run.lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def _hold_elsewhere(run_dir, seconds):
    """Another live process that holds the run directory's lock for `seconds`."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pretrain.run_lock import hold; "
                               "hold(sys.argv[1], 0); print('held', flush=True); time.sleep(float(sys.argv[2]))",
                               str(run_dir), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data):
    """The reference: 2 workers x ZeRO-2, 20 steps, never interrupted."""
    from pretrain.launch import run_training

    run_dir = tmp_path_factory.mktemp("straight")
    run_training(load_config("tiny", [*data, f"run_dir={run_dir}", "max_steps=20", "checkpoint_every=10"]))
    return run_dir


def test_two_workers_zero2_loss_falls_with_metrics_and_artifacts(straight):
    from pretrain import checkpoint

    rows = _metrics(straight)
    losses = [m["loss"] for m in rows]
    assert [m["step"] for m in rows] == list(range(1, 21))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    for key in ("ar", "nar", "aux", "kl_nar_aux", "kl_ar_aux", "lr", "grad_norm", "tokens_per_s", "mfu",
                "skipped_nonfinite", "data_skipped"):
        assert key in rows[-1], key
    assert 0 < rows[-1]["mfu"] < 1 and rows[-1]["grad_norm"] > 0 and rows[-1]["skipped_nonfinite"] == 0
    assert checkpoint.complete_steps(straight / "checkpoints") == [10, 20]
    step20 = straight / "checkpoints" / "step-00000020"
    assert json.loads((step20 / "config.json").read_text())["model"]["d_model"] == 64
    assert (step20 / "tokenizer.model").stat().st_size > 0
    assert json.loads((straight / "config.json").read_text())["max_steps"] == 20
    assert list((straight / "tensorboard").glob("events.out.tfevents.*"))
    assert (straight / "loss.png").stat().st_size > 10_000


def test_a_worker_killed_with_sigkill_is_restarted_by_ray_and_the_run_resumes_exactly(tmp_path, data, straight):
    from pretrain.launch import run_training

    run_dir = tmp_path / "killed-worker"
    run_training(load_config("tiny", [*data, f"run_dir={run_dir}", "max_steps=20", "checkpoint_every=10",
                                      "max_failures=1", "debug_sigkill_at_step=13"]))
    assert (run_dir / "debug-killed").exists()  # the last rank really died at step 13
    again = _metrics(run_dir)
    assert [m["step"] for m in again] == list(range(1, 21))
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(_metrics(straight), again)) == 0.0


@pytest.mark.parametrize("source", ["local", "http"])
def test_the_whole_job_killed_with_sigkill_resumes_exactly_when_started_again(tmp_path, data, straight, source,
                                                                             shard_server):
    if source == "http":  # the same shards streamed from a server on 127.0.0.1, as a cluster reads them
        data = [f"shards={shard_server(data[0].removeprefix('shards=')).url}", *data[1:]]
    run_dir = tmp_path / "killed-job"
    cmd = [sys.executable, "-m", "cluster.cli", "pretrain", "--config", "tiny", *data, f"run_dir={run_dir}",
           "max_steps=20", "checkpoint_every=10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = _wait_for_steps(run_dir, 13)
    holder = json.loads((run_dir / "run.lock").read_text())["pid"]
    assert _lock_is_held(run_dir) and holder != proc.pid  # rank 0 holds the run directory while it trains
    _kill_session(proc.pid)  # the driver, its Ray cluster and its workers, mid-run
    proc.wait()
    deadline = time.time() + 30  # SIGKILL is delivered at once; the exit that closes files comes a moment later
    while _lock_is_held(run_dir) and time.time() < deadline:
        time.sleep(0.1)
    assert not _lock_is_held(run_dir)  # the kernel let go of the lock with its holder
    killed_at = len(metrics.read_text().splitlines())
    assert 13 <= killed_at < 20
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from step 10" in done.stdout + done.stderr
    again = _metrics(run_dir)
    assert [m["step"] for m in again] == list(range(1, 21))
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(_metrics(straight), again)]
    assert max(diffs[killed_at:]) == 0.0 and max(diffs) == 0.0


def test_a_run_directory_in_use_by_a_live_process_is_waited_for_then_refused(tmp_path, data):
    run_dir = tmp_path / "busy"
    holder = _hold_elsewhere(run_dir, 120)
    cmd = [sys.executable, "-m", "cluster.cli", "pretrain", "--config", "tiny", *data, f"run_dir={run_dir}",
           "lock_wait_s=2"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    holder.kill()
    holder.wait()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"janus pretrain: error: {run_dir} is in use by pid "
                                                              f"{holder.pid} on ")
    assert f"waiting up to 2s for pid {holder.pid}" in refused.stdout
    assert not (run_dir / "config.json").exists()  # nothing of the live run was touched


def test_a_start_waits_for_the_holder_to_exit_and_then_holds_the_directory(tmp_path):
    from pretrain.run_lock import RunDirInUse, hold

    holder = _hold_elsewhere(tmp_path, 2)
    start = time.monotonic()
    fd = hold(tmp_path, 60)
    assert holder.poll() is not None and time.monotonic() - start > 0.5  # it waited for the holder's exit
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    with pytest.raises(RunDirInUse):  # a second holder, even in this process, is refused
        hold(tmp_path, 0)
    os.close(fd)


def test_fewer_workers_resume_a_checkpoint_through_the_universal_format(tmp_path, data, straight):
    """Elastic resume: the step-10 checkpoint of 2 workers continues on 1 worker."""
    from pretrain import checkpoint
    from pretrain.launch import run_training

    run_dir = tmp_path / "elastic"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-00000010", run_dir / "checkpoints" / "step-00000010")
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in _metrics(straight)[:10]))
    run_training(load_config("tiny", [*data, f"run_dir={run_dir}", "max_steps=16", "checkpoint_every=16",
                                      "num_workers=1"]))
    assert (run_dir / "checkpoints" / "universal" / "step-00000010").is_dir()
    rows = _metrics(run_dir)
    assert [m["step"] for m in rows] == list(range(1, 17))
    reference = _metrics(straight)
    first_losses = sum(m["loss"] for m in reference[:3]) / 3
    # the curve continues where it was (Adam moments and weights restored), far below a fresh start
    for resumed, ref in zip(rows[10:], reference[10:16]):
        assert abs(resumed["loss"] - ref["loss"]) < 0.15 * ref["loss"], (resumed, ref)
        assert resumed["loss"] < 0.9 * first_losses
    assert checkpoint.manifest(run_dir / "checkpoints" / "step-00000016")["world_size"] == 1


def test_nonfinite_losses_are_skipped_and_k_in_a_row_stop_the_run(tmp_path, data):
    from pretrain import checkpoint
    from pretrain.launch import Diverged, run_training

    run_dir = tmp_path / "nan"
    with pytest.raises(Diverged, match=r"non-finite 3 steps in a row at step 4; the last good checkpoint is step 2"):
        run_training(load_config("tiny", [*data, f"run_dir={run_dir}", "max_steps=20", "checkpoint_every=2",
                                          "max_nonfinite=3", "debug_nonfinite_batches=2,5,6,7"]))
    rows = _metrics(run_dir)
    assert [m["step"] for m in rows] == [1, 2, 3]  # batch 2 skipped, the run went on
    assert [m["skipped_nonfinite"] for m in rows] == [0, 1, 1]
    assert checkpoint.complete_steps(run_dir / "checkpoints") == [2]


def test_a_clock_budget_ends_the_run_at_a_checkpoint_and_drives_the_schedule(tmp_path, data):
    from pretrain import checkpoint
    from pretrain.launch import run_training

    run_dir = tmp_path / "clock"
    cfg = [*data, f"run_dir={run_dir}", "max_steps=1000000", "checkpoint_every=1000000", "max_minutes=0.1",
           "lr_schedule=polynomial", "warmup_steps=2"]
    run_training(load_config("tiny", cfg))
    rows = _metrics(run_dir)
    assert 6 <= rows[-1]["elapsed_s"] < 60 and rows[-1]["step"] < 1000000
    assert checkpoint.complete_steps(run_dir / "checkpoints") == [rows[-1]["step"]]
    assert json.loads((run_dir / "stopped.json").read_text()) == {"step": rows[-1]["step"], "why": "clock"}
    assert rows[-1]["lr"] < 0.3 * max(r["lr"] for r in rows)  # decayed by the clock, not by max_steps
    run_training(load_config("tiny", cfg))  # started again: the budget is spent, no step is taken
    assert _metrics(run_dir)[-1]["step"] == rows[-1]["step"]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigKeyError, match="unknown config key 'max_step'; did you mean 'max_steps'"):
        load_config("tiny", ["max_step=5"])
    with pytest.raises(ConfigKeyError, match="'lr' wants a float"):
        load_config("tiny", ["lr=fast"])
    with pytest.raises(FileNotFoundError, match="built-in configs"):
        load_config("nope")
    with pytest.raises(ConfigKeyError, match="cpu_threads=-1: must be >= 0"):
        load_config("tiny", ["cpu_threads=-1"])
    assert load_config("tiny", ["seed=3"]).seed == 3


def test_sigterm_checkpoints_and_exits_with_the_preemption_code(tmp_path, data):
    from pretrain import checkpoint
    from pretrain.launch import PREEMPTED_EXIT_CODE

    run_dir = tmp_path / "preempt"
    cmd = [sys.executable, "-m", "cluster.cli", "pretrain", "--config", "tiny", *data, f"run_dir={run_dir}",
           "max_steps=400", "checkpoint_every=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = _wait_for_steps(run_dir, 3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == PREEMPTED_EXIT_CODE, out[-2000:]
    steps = checkpoint.complete_steps(run_dir / "checkpoints")
    assert len(steps) == 1 and 3 <= steps[0] < 400
    assert max(json.loads(line)["step"] for line in metrics.read_text().splitlines()) == steps[0]


@pytest.mark.parametrize("layout", [["zero_stage=3"], ["tensor_parallel=2", "zero_stage=1"]])
def test_zero3_and_tensor_parallel_runs_take_the_plain_runs_steps(tmp_path, data, straight, layout):
    """ZeRO-3 over two data-parallel ranks trains as the plain ZeRO-2 run does; TP=2 over two workers (one
    data-parallel rank, so one data stream) as a plain run on one worker: the same losses, step for step,
    up to the order of floating-point reductions."""
    from pretrain.launch import run_training

    run_dir = tmp_path / "run"
    run_training(load_config("tiny", [*data, f"run_dir={run_dir}", "max_steps=12", "checkpoint_every=12", *layout]))
    if "tensor_parallel=2" in layout:
        plain = tmp_path / "plain"
        run_training(load_config("tiny", [*data, f"run_dir={plain}", "max_steps=12", "checkpoint_every=12",
                                          "num_workers=1"]))
        reference = _metrics(plain)
    else:
        reference = _metrics(straight)[:12]
    got = _metrics(run_dir)
    assert [m["tokens"] for m in got] == [m["tokens"] for m in reference]  # the same batches
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(got, reference)) < 1e-3
    assert reference[-1]["loss"] < reference[0]["loss"]  # and they are training steps


def test_grad_accum_counts_optimizer_steps_over_its_micro_batches(tmp_path, data, straight):
    """grad_accum=2: each step accumulates two loader batches, so step k has seen the batches of the plain
    run's first 2k steps, and DeepSpeed took exactly max_steps optimizer steps."""
    import torch

    from pretrain import checkpoint
    from pretrain.launch import run_training

    run_dir = tmp_path / "accum"
    run_training(load_config("tiny", [*data, f"run_dir={run_dir}", "max_steps=6", "checkpoint_every=6",
                                      "grad_accum=2"]))
    got = _metrics(run_dir)
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    plain = _metrics(straight)
    assert [m["tokens"] for m in got] == [plain[2 * k - 1]["tokens"] for k in range(1, 7)]
    states = next((run_dir / "checkpoints" / checkpoint.tag_for(6)).glob("*model_states.pt"))
    assert torch.load(states, weights_only=False)["global_steps"] == 6
    assert got[-1]["loss"] < got[0]["loss"]


def test_resuming_at_another_tensor_parallel_size_is_refused_in_one_line(tmp_path, data, straight):
    from pretrain.launch import run_training

    run_dir = tmp_path / "tp-change"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-00000010", run_dir / "checkpoints" / "step-00000010")
    with pytest.raises(ValueError, match="written at tensor_parallel=1: keep that"):
        run_training(load_config("tiny", [*data, f"run_dir={run_dir}", "tensor_parallel=2"]))
