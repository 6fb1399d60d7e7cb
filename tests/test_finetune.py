"""Fine-tuning on the shared engine, evaluation in every decoding mode, export and `janus.load`,
task metrics against the reference libraries, and the one-line errors for bad task data."""

import json
import subprocess
import sys

import pytest
import torch

from finetune.metrics import distinct, meteor, rouge, task_scores
from finetune.tasks import check_task


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, nmt_dir):
    """A GLGE-layout NMT task cut from the real LibreOffice en-de splits."""
    from pretrain.inputs import read_pairs

    out = tmp_path_factory.mktemp("task")
    for split, n in (("train", 3000), ("dev", 40), ("test", 12)):
        pairs = [p for p in read_pairs(nmt_dir, split) if len(p[0].split()) <= 20][:n]
        (out / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs))
        (out / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs))
    return out


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def test_metrics_agree_with_the_reference_libraries():
    import sacrebleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    from finetune.metrics import wordnet

    hyps = ["the cat was sitting on the mat", "a quick brown fox jumps", "click the OK button"]
    refs = ["the cat sat on the mat", "the quick brown fox jumped over", "click OK"]
    nmt = task_scores("nmt", hyps, refs)
    assert nmt["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert nmt["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert nmt["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: 100 * sum(scorer.score(r, h)[k].fmeasure for h, r in zip(hyps, refs)) / 3
                for k in ("rouge1", "rouge2", "rougeL")}
    assert rouge(hyps, refs) == pytest.approx(expected)
    wn = wordnet()
    assert wn.synsets("dog")[0].name() == "dog.n.01"
    direct = [meteor_score([r.split()], h.split(), wordnet=wn) for h, r in zip(hyps, refs)]
    assert meteor(hyps, refs) == pytest.approx(100 * sum(direct) / 3)
    # synonyms through WordNet: "sitting" matches "sat" via stems/synsets, so METEOR beats exact unigrams
    assert meteor(["the cat was sitting on the mat"], ["the cat sat on the mat"]) > 70
    # Distinct-n by hand: 5 unigrams, 4 distinct; 3 bigrams, 3 distinct
    assert distinct(["a b a", "c d"], 1) == pytest.approx(100 * 4 / 5)
    assert distinct(["a b a", "c d"], 2) == pytest.approx(100 * 3 / 3)
    dialogue = task_scores("dialogue", hyps, refs)
    assert dialogue["bleu1"] == pytest.approx(sacrebleu.metrics.BLEU(max_ngram_order=1).corpus_score(hyps, [refs]).score)
    assert set(task_scores("question_generation", hyps, refs)) >= {"bleu4", "rougeL", "meteor"}


def test_bad_task_data_gives_one_line_errors(tmp_path, task_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(task_dir, bad)
    (bad / "test.tgt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.tgt is missing"):
        check_task("nmt", bad)
    shutil.copy(task_dir / "test.tgt", bad / "test.tgt")
    (bad / "dev.tgt").write_text("".join((task_dir / "dev.tgt").read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"dev\.src has 40 lines but .*dev\.tgt has 39"):
        check_task("nmt", bad)
    shutil.copy(task_dir / "dev.tgt", bad / "dev.tgt")
    lines = (task_dir / "train.src").read_text().splitlines()
    lines[6] = "  "
    (bad / "train.src").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.src line 7 is empty"):
        check_task("nmt", bad)
    cli = subprocess.run([sys.executable, "-m", "cluster.cli", "finetune", "--task", "nmt", "--data", str(bad),
                          "--init", "scratch", f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.strip().count("\n") == 0, cli.stderr
    assert "train.src line 7 is empty" in cli.stderr


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, task_dir, tokenizer):
    """A tiny pretraining run (real blocks, 2 workers) to fine-tune from."""
    from pretrain.config import load_config
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards
    from pretrain.launch import run_training

    shards = tmp_path_factory.mktemp("blocks")
    write_block_shards(list(read_documents([task_dir / "train.tgt"])), tokenizer.path, shards, seq_len=64,
                       docs_per_shard=500, workers=1)
    run_dir = tmp_path_factory.mktemp("pretrain")
    run_training(load_config("tiny", [f"shards={shards}", f"tokenizer={tokenizer.path}", f"run_dir={run_dir}",
                                      "max_steps=6", "checkpoint_every=6"]))
    return run_dir


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pretrained, task_dir):
    from finetune.run import load_finetune_config, run_finetune

    run_dir = tmp_path_factory.mktemp("finetune")
    run_finetune("nmt", str(task_dir), str(pretrained), *load_finetune_config(
        "tiny", [f"run_dir={run_dir}", "max_steps=12", "eval_every=4", "checkpoint_every=4", "keep_checkpoints=1"]))
    return run_dir


def test_finetuning_starts_from_the_pretrained_weights_and_keeps_the_best_dev_checkpoint(finetuned, pretrained):
    from pretrain import checkpoint

    root = finetuned / "checkpoints"
    dev = [json.loads(line) for line in (finetuned / "dev.jsonl").read_text().splitlines()]
    assert [d["step"] for d in dev] == [4, 8, 12]
    best = json.loads((root / "best.json").read_text())
    first_best = max(dev, key=lambda d: (d["bleu"], -d["step"]))  # the earliest of equal scores is kept
    assert (best["step"], best["value"]) == (first_best["step"], first_best["bleu"])
    assert best["step"] in checkpoint.complete_steps(root)  # retention (keep 1) never deletes the best
    assert checkpoint.complete_steps(root)[-1] == 12
    assert (finetuned / "tokenizer.model").read_bytes() == \
        (pretrained / "checkpoints" / "step-00000006" / "tokenizer.model").read_bytes()
    # the first fine-tuning loss is the pretrained model's, far below a random init's
    first = json.loads((finetuned / "metrics.jsonl").read_text().splitlines()[0])
    start = json.loads((pretrained / "metrics.jsonl").read_text().splitlines()[0])
    assert first["ar"] < start["ar"]


def test_patience_ends_the_run_when_the_dev_metric_stops_improving(tmp_path, task_dir, tokenizer):
    from finetune.run import load_finetune_config, run_finetune
    from pretrain import checkpoint

    run_dir = tmp_path / "patience"
    run_finetune("nmt", str(task_dir), "scratch", *load_finetune_config(
        "tiny", [f"run_dir={run_dir}", f"tokenizer={tokenizer.path}", "max_steps=40", "eval_every=2",
                 "checkpoint_every=100", "patience=2", "dev_examples=8"]))
    dev = [json.loads(line) for line in (run_dir / "dev.jsonl").read_text().splitlines()]
    best, since, stop = float("-inf"), 0, None  # where patience 2 must end the run, from the dev curve
    for d in dev:
        best, since = (d["bleu"], 0) if d["bleu"] > best else (best, since + 1)
        if since == 2:
            stop = d["step"]
            break
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert last == (stop or 40) and dev[-1]["step"] == last
    assert json.loads((run_dir / "stopped.json").read_text()) == {"step": last, "why": "patience" if stop else "max_steps"}
    assert checkpoint.complete_steps(run_dir / "checkpoints")[-1] == last  # the last step is checkpointed
    assert json.loads((run_dir / "checkpoints" / "best.json").read_text())["value"] == best


def test_evaluate_writes_every_output_for_every_mode(finetuned, task_dir, tmp_path):
    out = tmp_path / "eval"
    cli = subprocess.run([sys.executable, "-m", "cluster.cli", "evaluate", "--model", str(finetuned), "--data",
                          str(task_dir), "--split", "test", "--iterations", "1,2,4,10", "--latency-examples", "2",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["ar_beam5", "ar_greedy", "nar_T1", "nar_T2", "nar_T4", "nar_T10", "draft"]
    for name, m in metrics.items():
        for key in ("bleu", "chrf", "bleu_signature", "latency_ms_b1", "examples_per_s_b32", "speedup_vs_ar_beam5"):
            assert key in m, (name, key)
        assert len((out / f"{name}.hyp").read_text().splitlines()) == 12
    assert metrics["ar_beam5"]["speedup_vs_ar_beam5"] == 1.0
    assert metrics["draft"]["identical_to_ar_greedy"] == 1.0
    assert (out / "draft.hyp").read_text() == (out / "ar_greedy.hyp").read_text()
    assert "| nar_T4 |" in (out / "results.md").read_text()
    assert (out / "frontier.png").stat().st_size > 10_000


def test_bench_decode_times_every_mode_interleaved_with_spread_and_paired_speedups(finetuned, task_dir, tmp_path):
    out = tmp_path / "decode.json"
    cli = subprocess.run([sys.executable, "-m", "cluster.cli", "bench", "decode", "--model", str(finetuned), "--data",
                          str(task_dir), "--latency-examples", "3", "--repeats", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    report = json.loads(out.read_text())
    results = report["results"]
    assert report["examples"] == 12 and list(results) == ["ar_beam5", "ar_greedy", "nar_T1", "nar_T4", "nar_T10",
                                                          "draft", "draft_top3"]
    for r in results.values():
        assert r["latency_ms_b1_p25"] <= r["latency_ms_b1"] <= r["latency_ms_b1_p75"]
        assert r["timed_examples"] == 3 and r["repeats"] == 2 and r["examples_per_s_b32"] > 0
        assert r["load_average_start"] >= 0 and "bleu" in r
    assert results["ar_greedy"]["speedup_vs_ar_greedy"] == 1.0 and results["ar_beam5"]["speedup_vs_ar_beam5"] == 1.0
    assert results["draft"]["identical_to_ar_greedy"] == 1.0 and results["draft"]["tokens_per_round"] >= 1
    assert results["draft_top3"]["tokens_per_round"] >= 1 and "NOT AR greedy" in cli.stdout
    table = cli.stdout[cli.stdout.index("mode "):].splitlines()
    assert table[0].split()[:4] == ["mode", "bleu", "b1", "ms"] and table[1].startswith("---")
    assert [line.split()[0] for line in table[2:9]] == list(results)


def test_export_verifies_loads_and_generates_like_the_checkpoint(finetuned, tmp_path):
    import janus
    from pretrain.artifacts import load_model
    from janus.export import verify_export
    from janus.generate import Mode, translate
    from janus.tokenizer import pad_batch

    out = tmp_path / "export"
    cli = subprocess.run([sys.executable, "-m", "cluster.cli", "export", str(finetuned), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "SHA256SUMS", "config.json", "model.safetensors",
                                                     "tokenizer.model"]
    assert verify_export(out) == []
    assert "Best dev bleu" in (out / "README.md").read_text()
    loaded = janus.load(out)
    model, tok, _ = load_model(finetuned)  # the best checkpoint, consolidated from its ZeRO shards
    src = pad_batch([tok.encode("Click OK to close the dialog.")])
    with torch.no_grad():
        a = loaded.model.logits(loaded.model.encode(src).states)
        b = model.logits(model.encode(src).states)
    assert torch.equal(a, b)
    texts = ["Click OK.", "Select the cells you want to format."]
    assert loaded.generate(texts, mode="draft") == loaded.generate(texts, mode="ar_greedy")
    # mask-predict through the export gives the checkpoint's outputs
    nar = loaded.generate(texts, mode="nar", iterations=2)
    assert nar == translate(model, tok, texts, Mode("nar_T2", "nar", iterations=2))
    # a flipped byte in the weights fails verification, through the CLI too
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    assert any("sha256 differs" in p for p in verify_export(out))
    bad = subprocess.run([sys.executable, "-m", "cluster.cli", "export", "--verify", str(out)], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and "model.safetensors" in bad.stderr
    with pytest.raises(ValueError, match="sha256 differs"):
        janus.load(out)


def test_a_bang_model_is_evaluated_in_its_own_modes_through_janus_evaluate(task_dir, tokenizer, tmp_path):
    """A run trained with the BANG objective is decoded by `janus evaluate --mode all` with AR and BANG's NAR
    and semi-NAR, not with mask-predict or draft-and-verify (which need the CMLM stream BANG does not train)."""
    from finetune.run import load_finetune_config, run_finetune

    run_dir = tmp_path / "bang"
    run_finetune("nmt", str(task_dir), "scratch", *load_finetune_config(
        "tiny", [f"run_dir={run_dir}", f"tokenizer={tokenizer.path}", "objective=bang", "max_steps=4",
                 "eval_every=4", "checkpoint_every=4", "dev_examples=4"]))
    out = tmp_path / "eval"
    cli = subprocess.run([sys.executable, "-m", "cluster.cli", "evaluate", "--model", str(run_dir), "--data",
                          str(task_dir), "--split", "test", "--latency-examples", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["ar_beam5", "ar_greedy", "bang_nar", "bang_semi4"]
    assert all(len((out / f"{name}.hyp").read_text().splitlines()) == 12 for name in metrics)
    assert json.loads((run_dir / "checkpoints" / "step-00000004" / "config.json").read_text())["finetune"]["task"] == "nmt"
