"""Checkpoints are taken whole or not at all: markers, checksums, rank parts, pruning, restore."""

import os
import shutil

import torch
import torch.multiprocessing as mp

from janus.parallel import free_port


def _worker(rank, world, port, root):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")
    import deepspeed

    from janus.config import preset
    from janus.model import JanusModel
    from janus.parallel import init_parallel
    from pretrain import checkpoint
    from pretrain.deepspeed_setup import MegatronMPU

    init_parallel(1)
    torch.manual_seed(0)

    def engine():
        model = JanusModel(preset("tiny", vocab_size=1000))
        config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2},
                  "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}, "steps_per_print": 10 ** 9}
        return deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config,
                                    mpu=MegatronMPU())[0]

    eng = engine()
    src = torch.randint(5, 1000, (2, 6))
    for step in (1, 2, 3):
        eng.backward(eng.module.encode(src).length_logits.logsumexp(-1).sum())
        eng.step()
        checkpoint.save(root, step, eng, {"rank": rank, "cursor": step * 10}, keep=2)
    weights = {n: p.detach().clone() for n, p in eng.module.named_parameters()}
    fresh = engine()
    state = checkpoint.load(root, 3, fresh)
    assert state == {"rank": rank, "cursor": 30}
    for n, p in fresh.module.named_parameters():
        assert torch.equal(p, weights[n]), n



def test_complete_checkpoints_only(tmp_path):
    from pretrain import checkpoint

    root = tmp_path / "ckpt"
    mp.start_processes(_worker, args=(2, free_port(), str(root)), nprocs=2, join=True, start_method="spawn")
    assert checkpoint.complete_steps(root) == [2, 3]  # keep=2 pruned step 1
    assert (root / "latest").read_text() == "step-00000003"
    step3 = root / "step-00000003"
    assert sorted(p.name for p in step3.glob("rank-*.pt")) == ["rank-00000.pt", "rank-00001.pt"]

    # a directory without its marker (a save that died before rank 0 finished) is never taken
    shutil.copytree(step3, root / "step-00000004")
    (root / "step-00000004" / checkpoint.MARKER).unlink()
    assert checkpoint.latest_complete(root) == 3
    # a missing rank part (DeepSpeed #5405: "expected 2, found 1")
    shutil.copytree(step3, root / "step-00000005")
    (root / "step-00000005" / "rank-00001.pt").unlink()
    assert checkpoint.latest_complete(root) == 3
    # a truncated shard
    shutil.copytree(step3, root / "step-00000006")
    shard = next((root / "step-00000006").rglob("*optim_states.pt"))
    shard.write_bytes(shard.read_bytes()[:100])
    assert checkpoint.latest_complete(root) == 3
    # the intact step is still found after all that
    assert checkpoint.is_complete(step3)
