"""`janus pretrain`: Ray + DeepSpeed ZeRO workers on real shards; the run directory resumes exactly."""

import json

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


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_workers_zero2_train_and_resume_exactly(tmp_path, data):
    from pretrain import checkpoint
    from pretrain.trainer import run_pretrain

    straight = tmp_path / "straight"
    run_pretrain(load_config("tiny", [*data, f"run_dir={straight}", "max_steps=20", "checkpoint_every=10"]))
    losses = [m["loss"] for m in _metrics(straight)]
    assert [m["step"] for m in _metrics(straight)] == list(range(1, 21))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    assert checkpoint.complete_steps(straight / "checkpoints") == [10, 20]
    assert json.loads((straight / "config.json").read_text())["max_steps"] == 20

    # the same command stopped at step 7 and started again continues from its checkpoint
    resumed = tmp_path / "resumed"
    run_pretrain(load_config("tiny", [*data, f"run_dir={resumed}", "max_steps=7", "checkpoint_every=7"]))
    run_pretrain(load_config("tiny", [*data, f"run_dir={resumed}", "max_steps=20", "checkpoint_every=10"]))
    again = _metrics(resumed)
    assert [m["step"] for m in again] == list(range(1, 21))
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(_metrics(straight), again)) == 0.0


def test_config_errors_name_the_key():
    with pytest.raises(ConfigKeyError, match="unknown config key 'max_step'; did you mean 'max_steps'"):
        load_config("tiny", ["max_step=5"])
    with pytest.raises(ConfigKeyError, match="'lr' wants a float"):
        load_config("tiny", ["lr=fast"])
    with pytest.raises(FileNotFoundError, match="built-in configs"):
        load_config("nope")
    assert load_config("tiny", ["seed=3"]).seed == 3


def test_sigterm_checkpoints_and_exits_with_the_preemption_code(tmp_path, data):
    import signal
    import subprocess
    import sys
    import time

    from pretrain import checkpoint
    from pretrain.trainer import PREEMPTED_EXIT_CODE

    run_dir = tmp_path / "preempt"
    cmd = [sys.executable, "-m", "cluster.cli", "pretrain", "--config", "tiny", *data, f"run_dir={run_dir}",
           "max_steps=400", "checkpoint_every=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == PREEMPTED_EXIT_CODE, out[-2000:]
    steps = checkpoint.complete_steps(run_dir / "checkpoints")
    assert len(steps) == 1 and 3 <= steps[0] < 400
    assert max(json.loads(line)["step"] for line in metrics.read_text().splitlines()) == steps[0]



@pytest.mark.parametrize("layout", [["zero_stage=3"], ["tensor_parallel=2", "zero_stage=1"]])
def test_zero3_and_tensor_parallel_runs(tmp_path, data, layout):
    from pretrain.trainer import run_pretrain

    run_dir = tmp_path / "run"
    run_pretrain(load_config("tiny", [*data, f"run_dir={run_dir}", "max_steps=12", "checkpoint_every=12", *layout]))
    losses = [m["loss"] for m in _metrics(run_dir)]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
