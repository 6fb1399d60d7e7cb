"""`janus demo` (what `make demo` runs): the whole pipeline on real data, on this machine.

  1. data       fetch LibreOffice help + DDTP en-de (NMT) and the English pretraining corpus (pinned,
                sha256-checked Debian packages); train the joint tokenizer; write webdataset shards
  2. pretrain   a `small` JANUS, BART-style denoising of monolingual en + de text, 2 Ray workers x ZeRO-2
  3. finetune   en-de NMT from that checkpoint, same engine, best checkpoint by dev BLEU
  4. evaluate   AR beam 5 and greedy, NAR mask-predict T=1/4/10, draft-and-verify on held-out pairs
  5. export     safetensors + config + tokenizer + model card, verified
  6. report     runs/demo/report.md with the table, loss curves and the quality/latency frontier

Every stage writes a `.done` marker after it completes; interrupted and started again, the demo skips
finished stages and the interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class DemoConfig:
    run_dir: str = "runs/demo"
    preset: str = "small"
    pretrain_steps: int = 120
    finetune_steps: int = 200
    token_budget: int = 1024  # target tokens per worker per step
    workers: int = 2
    pretrain_documents: int = 20000  # English documents from the pretraining corpus (plus the NMT text)
    eval_examples: int = 100
    latency_examples: int = 10
    seed: int = 0


def _stage(run: Path, name: str, title: str, fn):
    marker = run / "stages" / f"{name}.done"
    if marker.is_file():
        print(f"[{name}] done already ({json.loads(marker.read_text())['seconds']:.0f} s): skipping", flush=True)
        return json.loads(marker.read_text()).get("result")
    print(f"[{name}] {title}", flush=True)
    start = time.perf_counter()
    result = fn()
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"seconds": time.perf_counter() - start, "result": result}))
    tmp.replace(marker)
    return result


def run_demo(cfg: DemoConfig) -> dict:
    from finetune.evaluate import evaluate, load_model, write_results
    from finetune.run import run_finetune
    from finetune.tasks import check_task
    from janus.export import verify_export
    from janus.generate import modes
    from pretrain.config import load_config
    from pretrain.datasets import fetch, nmt_tokenizer
    from pretrain.exporting import export_checkpoint
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards
    from pretrain.trainer import run_training

    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "demo-config.json").write_text(json.dumps(asdict(cfg), indent=2))
    started = time.perf_counter()
    common = [f"model_preset={cfg.preset}", f"token_budget={cfg.token_budget}", f"window={cfg.token_budget * 8}",
              f"num_workers={cfg.workers}", f"seed={cfg.seed}"]

    def data():
        nmt, tok = nmt_tokenizer(8000)
        english = [d for _, d in zip(range(cfg.pretrain_documents), read_documents([fetch("pretrain-en") / "train.txt"]))]
        mono = list(read_documents([nmt / "train.src", nmt / "train.tgt"]))  # one side at a time: no pairs
        write_block_shards(english + mono, tok.path, run / "pretrain-shards", seq_len=128,
                           docs_per_shard=max(1, (len(english) + len(mono)) // 8))
        return {"nmt": str(nmt), "tokenizer": str(tok.path), "english_documents": len(english),
                "nmt_lines": len(mono)}

    info = _stage(run, "data", "fetch the corpora, train the tokenizer, write shards", data)

    def pretrain():
        run_training(load_config("small", [f"shards={run / 'pretrain-shards'}", f"tokenizer={info['tokenizer']}",
                                           f"run_dir={run / 'pretrain'}", f"max_steps={cfg.pretrain_steps}",
                                           f"checkpoint_every={max(1, cfg.pretrain_steps // 3)}",
                                           f"warmup_steps={max(1, cfg.pretrain_steps // 4)}",
                                           "max_source_tokens=128", "max_target_tokens=128",
                                           *common]))

    _stage(run, "pretrain", f"pretrain a {cfg.preset} JANUS: {cfg.pretrain_steps} steps, {cfg.workers} Ray workers "
                            f"x DeepSpeed ZeRO-2", pretrain)

    def finetune():
        run_finetune("nmt", info["nmt"], str(run / "pretrain"), "small",
                     [f"run_dir={run / 'finetune'}", f"max_steps={cfg.finetune_steps}",
                      f"checkpoint_every={max(1, cfg.finetune_steps // 2)}",
                      f"eval_every={max(1, cfg.finetune_steps // 2)}", f"dev_examples={min(50, cfg.eval_examples)}",
                      f"warmup_steps={max(1, cfg.finetune_steps // 4)}", *common])

    _stage(run, "finetune", f"fine-tune en-de NMT from the pretrained checkpoint: {cfg.finetune_steps} steps", finetune)

    def evaluation():
        model, tok, _ = load_model(run / "finetune")
        pairs = check_task("nmt", info["nmt"], splits=("test",))["test"][:cfg.eval_examples]
        results = evaluate(model, tok, pairs, "nmt", modes("all", iterations=(1, 4, 10)),
                           latency_examples=cfg.latency_examples, repeats=1)  # interleaved, one pass: the demo's clock
        write_results(results, run / "eval", "nmt", f"en-de NMT, first {len(pairs)} test pairs")
        return {k: {m: v for m, v in r.items() if m != "hypotheses"} for k, r in results.items()}

    results = _stage(run, "evaluate", f"evaluate AR, NAR and draft-and-verify on {cfg.eval_examples} test pairs",
                     evaluation)

    def export():
        out = export_checkpoint(str(run / "finetune"), str(run / "export"), force=True)  # a rerun replaces its own export
        problems = verify_export(out)
        if problems:
            raise RuntimeError(problems[0])
        return str(out)

    _stage(run, "export", "export the fine-tuned model (safetensors, config, tokenizer, card) and verify it", export)
    for name in ("pretrain", "finetune"):
        if (run / name / "loss.png").is_file():
            shutil.copy(run / name / "loss.png", run / f"loss-{name}.png")
    shutil.copy(run / "eval" / "frontier.png", run / "frontier.png")
    report = _report(run, cfg, info, results, time.perf_counter() - started)
    print("\n" + (run / "eval" / "results.md").read_text())
    print(f"report: {run / 'report.md'}   export: {run / 'export'}")
    return report


def _report(run: Path, cfg: DemoConfig, info: dict, results: dict, seconds: float) -> dict:
    stages = {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((run / "stages").glob("*.done"))}
    best = json.loads((run / "finetune" / "checkpoints" / "best.json").read_text())
    last = {name: json.loads((run / name / "metrics.jsonl").read_text().splitlines()[-1])
            for name in ("pretrain", "finetune")}
    lines = [f"# JANUS demo ({time.strftime('%Y-%m-%d')})", "",
             f"A `{cfg.preset}` JANUS pretrained for {cfg.pretrain_steps} steps on monolingual English "
             f"({info['english_documents']} documents of the Debian documentation corpus) and the en/de sides of the "
             f"NMT corpus, then fine-tuned for {cfg.finetune_steps} steps on LibreOffice help + DDTP en-de; "
             f"{cfg.workers} Ray workers x DeepSpeed ZeRO-2, {cfg.token_budget} target tokens per worker per step, CPU.",
             "", f"Final training loss: pretraining {last['pretrain']['loss']:.3f}, fine-tuning "
             f"{last['finetune']['loss']:.3f}; best dev BLEU {best['value']:.2f} at step {best['step']} (kept).", "",
             (run / "eval" / "results.md").read_text(), "",
             "| stage | seconds |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in stages.items()], "",
             "![pretraining loss](loss-pretrain.png)", "", "![fine-tuning loss](loss-finetune.png)", "",
             "![quality / latency](frontier.png)", ""]
    (run / "report.md").write_text("\n".join(lines))
    return {"results": results, "stages": stages}
