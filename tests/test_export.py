"""Export consolidates ZeRO-3 partitions and tensor-parallel slices: a TP=2 ZeRO-3 run, loaded at TP=1
from its export, gives the logits DeepSpeed's own TP=2 load of the checkpoint gives."""

import json
import os
import subprocess
import sys

import torch
import torch.multiprocessing as mp

from janus.parallel import free_port

SENTENCES = ["Click OK to close the dialog.", "Select the cells you want to format.", "Choose Tools - Options."]



def _reference_logits(rank, port, run_dir, out):
    """DeepSpeed loads the checkpoint into a TP=2 ZeRO-3 engine; rank 0 writes the full-vocab logits."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")
    import deepspeed

    from janus.config import ModelConfig
    from janus.model import JanusModel
    from janus.parallel import gather_from_tp, init_parallel
    from janus.parallelize import parallelize
    from janus.tokenizer import Tokenizer, pad_batch
    from pretrain import checkpoint
    from pretrain.config import TrainConfig
    from pretrain.deepspeed_setup import MegatronMPU
    from pretrain.deepspeed_setup import deepspeed_config

    init_parallel(2)
    root = os.path.join(run_dir, "checkpoints")
    step = checkpoint.latest_complete(root)
    saved = json.loads(open(os.path.join(root, checkpoint.tag_for(step), "config.json")).read())
    cfg = TrainConfig(**saved["train"])
    model = parallelize(JanusModel(ModelConfig.from_dict(saved["model"])))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=deepspeed_config(cfg), mpu=MegatronMPU())
    engine.load_checkpoint(root, tag=checkpoint.tag_for(step))
    engine.module.eval()
    tok = Tokenizer(cfg.tokenizer)
    src = pad_batch([tok.encode(s) for s in SENTENCES])
    with torch.no_grad():
        logits = gather_from_tp(engine.module.logits(engine.module.encode(src).states))
    if rank == 0:
        torch.save(logits, out)


def test_tp2_zero3_run_exports_and_loads_at_tp1_with_equal_logits(tmp_path, nmt_dir, tokenizer):
    import ray

    import janus
    from janus.tokenizer import pad_batch
    from pretrain.config import load_config
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards
    from pretrain.launch import run_training

    shards = tmp_path / "shards"
    write_block_shards(list(read_documents([nmt_dir / "train.src"]))[:3000], tokenizer.path, shards, seq_len=64,
                       docs_per_shard=1000, workers=1)
    run_dir = tmp_path / "run"
    run_training(load_config("tiny", [f"shards={shards}", f"tokenizer={tokenizer.path}", f"run_dir={run_dir}",
                                      "max_steps=4", "checkpoint_every=4", "tensor_parallel=2", "zero_stage=3"]))
    ray.shutdown()
    reference = tmp_path / "reference.pt"
    mp.start_processes(_reference_logits, args=(free_port(), str(run_dir), str(reference)), nprocs=2, join=True,
                       start_method="spawn")
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "export", str(run_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = janus.load(out)  # this process is TP=1
    src = pad_batch([loaded.tokenizer.encode(s) for s in SENTENCES])
    with torch.no_grad():
        logits = loaded.model.logits(loaded.model.encode(src).states)
    expected = torch.load(reference)
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() <= 1e-5


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "export", str(tmp_path / "nothing"), "--out",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "does not exist" in done.stderr
    empty = tmp_path / "empty-run"
    (empty / "checkpoints").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "export", str(empty), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no complete checkpoint" in done.stderr


def test_an_export_loads_and_decodes_at_tp1_without_a_process_group(tmp_path, tokenizer):
    """janus.load builds a plain model (tensor parallelism is applied only where a TP group exists): a fresh
    interpreter loads an export and decodes in every mode with no torch.distributed group started."""
    from janus.config import preset
    from janus.export import write_export
    from janus.model import JanusModel

    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size))
    out = write_export(tmp_path / "export", model.full_state_dict(), model.cfg, tokenizer.path, "# test\n")
    code = ("import json, sys, torch.distributed as dist, janus\n"
            f"m = janus.load({str(out)!r}, device='cpu')\n"
            "outs = {mode: m.generate(['Click OK.', 'Choose Tools - Options.'], mode=mode, iterations=2)\n"
            "        for mode in ('ar_beam', 'ar_greedy', 'nar', 'draft')}\n"
            "print(json.dumps({'group': dist.is_initialized(), 'outs': outs}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["group"] is False
    assert all(len(texts) == 2 for texts in got["outs"].values())
    assert got["outs"]["draft"] == got["outs"]["ar_greedy"]  # and draft-and-verify is exact there too
