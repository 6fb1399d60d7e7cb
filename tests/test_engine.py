"""DeepSpeed ZeRO over megatron-core groups: TP=2 x DP=1 and TP=1 x DP=2 train the JANUS loss on real shards."""

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from janus.parallel import free_port


def _worker(rank, world, tp, port, shard_dir, vocab, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")
    import deepspeed

    from janus.config import preset
    from janus.model import JanusModel
    from janus.objective import compute_loss, objective
    from janus.parallel import init_parallel, parallel_state
    from janus.parallelize import parallelize
    from pretrain.deepspeed_setup import MegatronMPU
    from pretrain.loader import LoaderConfig, PairLoader
    from pretrain.shards import shard_urls

    init_parallel(tp)
    torch.manual_seed(0)
    model = parallelize(JanusModel(preset("tiny", vocab_size=vocab)))
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
              "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "torch_adam": True}},
              "zero_optimization": {"stage": 2}, "steps_per_print": 10 ** 9}
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config,
                                           mpu=MegatronMPU())
    dp_rank, dp_world = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    loader = PairLoader(shard_urls(shard_dir), LoaderConfig(token_budget=512, window=256, seed=0, max_source_tokens=100,
                                                            max_target_tokens=100),
                        rank=dp_rank, world=dp_world)
    losses = []
    for step, batch in enumerate(loader):
        loss, _ = compute_loss(engine.module, batch, objective("janus"))
        engine.backward(loss)
        engine.step()
        reduced = loss.detach().clone()
        torch.distributed.all_reduce(reduced)
        losses.append(float(reduced) / world)
        if step == 24:
            break
    if rank == 0:
        with open(os.path.join(out_dir, "losses.json"), "w") as f:
            json.dump({"losses": losses, "dp": dp_world, "tp": parallel_state.get_tensor_model_parallel_world_size(),
                       "zero_dp": engine.optimizer.dp_process_group.size()}, f)



@pytest.mark.parametrize("tp", [2, 1])
def test_zero2_trains_over_megatron_groups(tp, tmp_path, nmt_dir, tokenizer):
    from pretrain.inputs import read_pairs
    from pretrain.shards import write_pair_shards

    shard_dir = tmp_path / "shards"
    write_pair_shards(read_pairs(nmt_dir, "train")[:2000], tokenizer.path, shard_dir, pairs_per_shard=250, workers=1)
    mp.start_processes(_worker, args=(2, tp, free_port(), str(shard_dir), tokenizer.vocab_size, str(tmp_path)),
                       nprocs=2, join=True, start_method="spawn")
    got = json.loads((tmp_path / "losses.json").read_text())
    assert (got["tp"], got["dp"]) == (tp, 2 // tp)
    assert got["zero_dp"] == 2 // tp  # ZeRO shards over the data-parallel group, not the world
    first, last = sum(got["losses"][:5]) / 5, sum(got["losses"][-5:]) / 5
    assert last < 0.85 * first, got["losses"]
