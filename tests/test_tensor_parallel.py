"""TP=2 over two gloo processes gives the TP=1 logits and loss for the same weights."""

import os

import torch
import torch.multiprocessing as mp

from janus.parallel import free_port

from janus.config import preset
from janus.model import JanusModel
from janus.noising import span_mask
from janus.objective import Batch, compute_loss, objective
from janus.parallel import gather_from_tp
from janus.tokenizer import pad_batch


def _tp_worker(rank, world, port, path, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from janus.parallel import init_parallel
    from janus.parallelize import parallelize

    init_parallel(tensor_parallel_size=world)
    saved = torch.load(path)
    model = parallelize(JanusModel(preset("tiny", vocab_size=saved["vocab"])))
    model.load_full_state_dict(saved["state"])
    batch = Batch(**saved["batch"])
    loss, terms = compute_loss(model, batch, objective("janus"))
    loss.backward()
    with torch.no_grad():
        enc = model.encode(batch.src)
        h = model.decode(enc, batch.tgt, torch.arange(batch.tgt.shape[1]).expand_as(batch.tgt),
                         torch.ones(*batch.tgt.shape, batch.tgt.shape[1], dtype=torch.bool))
        logits = gather_from_tp(model.logits(h))
    grads = {n: p.grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.data = grads[n]  # gather the gradients through the same TP->full path as the weights
    full_grads = model.full_state_dict()
    roundtrip = model.full_state_dict()
    if rank == 0:
        torch.save({"loss": loss.detach(), "terms": {k: v.detach() for k, v in terms.items()}, "logits": logits,
                    "grads": full_grads, "roundtrip_keys": sorted(roundtrip)}, os.path.join(out_dir, "tp2.pt"))



def test_tp2_matches_tp1(tmp_path, tokenizer, real_pairs):
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size))
    pairs = real_pairs[:8]
    src = pad_batch([tokenizer.encode(s) for s, _ in pairs])
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    batch = Batch(src, tgt, span_mask(tgt, 0, torch.Generator().manual_seed(3)))
    loss, terms = compute_loss(model, batch, objective("janus"))
    loss.backward()
    with torch.no_grad():
        enc = model.encode(src)
        h = model.decode(enc, tgt, torch.arange(tgt.shape[1]).expand_as(tgt),
                         torch.ones(*tgt.shape, tgt.shape[1], dtype=torch.bool))
        logits = model.logits(h)
    path = tmp_path / "model.pt"
    torch.save({"vocab": tokenizer.vocab_size, "state": model.full_state_dict(), "batch": vars(batch)}, path)

    mp.start_processes(_tp_worker, args=(2, free_port(), str(path), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    got = torch.load(tmp_path / "tp2.pt")
    assert (got["logits"] - logits).abs().max() <= 1e-5
    assert abs(float(got["loss"]) - float(loss)) <= 1e-5
    for name, value in terms.items():
        assert abs(float(got["terms"][name]) - float(value)) <= 1e-5, name
    assert got["roundtrip_keys"] == sorted(n for n, _ in model.named_parameters())
    for name, p in model.named_parameters():
        assert torch.allclose(got["grads"][name], p.grad, atol=1e-5), f"gradient of {name} differs at TP=2"
