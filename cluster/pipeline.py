"""`janus demo` (what `make demo` runs): the whole pipeline on real data, on this machine, in a given time.

  1. data       fetch LibreOffice help + DDTP en-de (NMT) and the English pretraining corpus (pinned,
                sha256-checked Debian packages); train the joint tokenizer; write webdataset shards
  2. pretrain   BART-style denoising of monolingual en + de text, 2 Ray workers x ZeRO-2 (optional)
  3. finetune   en-de NMT, same engine: first the AR stage (`ar_share` of the time: AR and CMLM losses, or AR
                alone), then the JANUS objective from its last checkpoint, under one lr decay to 0; the JANUS
                stage's last checkpoint is the model (dev BLEU is logged, and its best kept, along the way)
  4. evaluate   AR beam 5 and greedy, NAR mask-predict T=1/4/10 on the whole test split; draft-and-verify
                on its first pairs
  5. export     safetensors + config + tokenizer + model card, verified
  6. report     runs/demo/report.md: the table, sample translations, loss curves, quality/latency frontier

`--minutes` is the demo's whole wall clock: after the data stage, what is left (less a reserve for
evaluation and export) is split between pretraining and fine-tuning, and each stage's trainer stops on
its share (`max_minutes`), so more minutes (or a faster machine) give a proportionally better model from
the same command. The plan is written once (`plan.json`); every stage writes a `.done` marker after it
completes, and a demo started again skips finished stages and resumes the interrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path


@dataclass
class DemoConfig:
    run_dir: str = "runs/demo"
    minutes: float = 27.5  # the whole demo, data stage included (`make setup`, 1.5 to 2 minutes, comes before it)
    preset: str = "tiny"  # on two cores the most updates per minute won (README: the recipe table)
    vocab_size: int = 2000
    token_budget: int = 1024  # target tokens per worker per step: at this budget more updates beat bigger ones
    workers: int = 2
    lr: float = 3e-3
    warmup_steps: int = 100
    # the 30-minute demo passes over its 63k pairs about 7 times, the 90-minute one 19 times, and the 0.3M-parameter
    # model's dev BLEU still rose into the last fifth of the 90 minutes: underfitting, not overfitting (dropout > 0
    # not measured at these clocks)
    dropout: float = 0.0
    pretrain_share: float = 0.0  # of the training time; 0 skips the stage (see the README's recipe table)
    # of the fine-tuning time, spent on the AR stage before JANUS's: its step costs 0.6 of a JANUS step and, without
    # the KL terms that tie AR to a still-random NAR and AUX, learns faster; JANUS then trains AUX and the ties.
    # (0.7 gave AR beam 5 8.44 and NAR T=10 2.73 against 8.14 / 3.42: README, recipe table)
    ar_share: float = 0.5
    # the AR stage's objective: "ar-cmlm" (JANUS's AR and NAR losses, without P_AUX and the KL terms) also trains
    # the NAR, which otherwise starts in the JANUS stage at half the peak lr; "ar": the AR loss alone
    ar_stage_objective: str = "ar-cmlm"
    # the JANUS stage's SKL weights times this: at 1 (as released) the three consistency terms pull the AR
    # stage's model down to its still-weak NAR and AUX within 100 steps (README, recipe table)
    kl_scale: float = 0.1
    # kept for evaluation (the whole test split: 1.9 min), export and the two stages' start-up (0.5 min each)
    reserve_minutes: float = 4.5
    max_pretrain_steps: int = 0  # > 0: a step cap besides the clock (tests)
    max_finetune_steps: int = 0
    pretrain_documents: int = 20000  # English documents from the pretraining corpus (plus the NMT text)
    eval_examples: int = 0  # 0: the whole test split
    draft_examples: int = 0  # > 0: draft-and-verify scored on the first N only (0: the same pairs as the rest)
    latency_examples: int = 20
    dev_examples: int = 100
    seed: int = 0

    def validate(self) -> "DemoConfig":
        for flag, value in (("--pretrain-share", self.pretrain_share), ("--ar-share", self.ar_share)):
            if not 0.0 <= value < 1.0:  # at 1 the next stage would get no time, and a 0-minute clock means none
                raise ValueError(f"{flag} {value:g} must be in [0, 1): the fraction of the time given to that stage")
        if self.ar_stage_objective not in ("ar", "ar-cmlm"):
            raise ValueError(f"--ar-stage-objective {self.ar_stage_objective!r}: choose ar or ar-cmlm")
        if self.kl_scale < 0:
            raise ValueError(f"--kl-scale {self.kl_scale:g} must be >= 0 (1: the KL weights as released)")
        return self


def last_checkpoint(stage_dir: Path) -> Path:
    """A stage's last complete checkpoint: what the demo carries on from, evaluates and exports. Its lr decays to the
    end, and the best by dev BLEU on 100 pairs is noise: on the whole test split the last beat it on AR beam 5 in
    three of three runs (+0.30 to +0.59) and on NAR T=10 in two (README, recipe table)."""
    from pretrain import checkpoint

    root = stage_dir / "checkpoints"
    return root / checkpoint.tag_for(checkpoint.latest_complete(root))


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


def plan(cfg: DemoConfig, seconds_so_far: float) -> dict:
    """Each training stage's minutes, from what the clock has left after the data stage."""
    train = max(1.0, cfg.minutes - seconds_so_far / 60 - cfg.reserve_minutes)
    finetune = train * (1 - cfg.pretrain_share)
    return {"pretrain_minutes": train * cfg.pretrain_share, "finetune_ar_minutes": finetune * cfg.ar_share,
            "finetune_minutes": finetune * (1 - cfg.ar_share)}


def run_demo(cfg: DemoConfig) -> dict:
    from finetune.evaluate import evaluate, write_results
    from pretrain.artifacts import load_model
    from finetune.run import load_finetune_config, run_finetune
    from finetune.tasks import check_task
    from janus.export import verify_export
    from janus.generate import modes
    from pretrain.config import load_config
    from pretrain.datasets import fetch, nmt_tokenizer
    from pretrain.exporting import export_checkpoint
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards
    from pretrain.launch import run_training

    cfg.validate()
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "demo-config.json").write_text(json.dumps(asdict(cfg), indent=2))
    started = time.perf_counter()
    common = dict(model_preset=cfg.preset, token_budget=cfg.token_budget, window=cfg.token_budget * 8,
                  num_workers=cfg.workers, seed=cfg.seed, warmup_steps=cfg.warmup_steps,
                  dropout=cfg.dropout, lr_schedule="polynomial", max_source_tokens=128, max_target_tokens=128)

    def data():
        nmt, tok = nmt_tokenizer(cfg.vocab_size)
        if cfg.pretrain_share > 0:
            english = [d for _, d in zip(range(cfg.pretrain_documents),
                                         read_documents([fetch("pretrain-en") / "train.txt"]))]
            mono = list(read_documents([nmt / "train.src", nmt / "train.tgt"]))  # one side at a time: no pairs
            write_block_shards(english + mono, tok.path, run / "pretrain-shards", seq_len=128,
                               docs_per_shard=max(1, (len(english) + len(mono)) // 8))
        else:
            english = mono = []
        return {"nmt": str(nmt), "tokenizer": str(tok.path), "english_documents": len(english),
                "nmt_lines": len(mono)}

    info = _stage(run, "data", "fetch the corpora, train the tokenizer, write shards", data)
    plan_path = run / "plan.json"
    if not plan_path.is_file():  # once: a resumed demo keeps its first plan
        plan_path.write_text(json.dumps(plan(cfg, time.perf_counter() - started), indent=2))
    budget = json.loads(plan_path.read_text())

    def pretrain():
        run_training(replace(load_config("small"), shards=str(run / "pretrain-shards"), tokenizer=info["tokenizer"],
                             run_dir=str(run / "pretrain"), max_minutes=budget["pretrain_minutes"],
                             max_steps=cfg.max_pretrain_steps or 10 ** 9, checkpoint_every=200, lr=cfg.lr, **common))

    if cfg.pretrain_share > 0:
        _stage(run, "pretrain", f"pretrain a {cfg.preset} JANUS for {budget['pretrain_minutes']:.1f} min, "
                                f"{cfg.workers} Ray workers x DeepSpeed ZeRO-2", pretrain)

    def finetune(objective: str, name: str, init: str, minutes: float, lr: float, lr_end: float):
        every = max(1, cfg.max_finetune_steps // 2) if cfg.max_finetune_steps else 250
        train, dev = load_finetune_config("small")
        train = replace(train, run_dir=str(run / name), max_minutes=minutes, max_steps=cfg.max_finetune_steps or 10 ** 9,
                        checkpoint_every=every, objective=objective, kl_scale=cfg.kl_scale, tokenizer=info["tokenizer"],
                        **common, lr=lr, lr_end=lr_end)
        run_finetune("nmt", info["nmt"], init, train, replace(dev, eval_every=every, dev_examples=cfg.dev_examples))

    init = str(run / "pretrain") if cfg.pretrain_share > 0 else "scratch"
    start = " from the pretrained checkpoint" if cfg.pretrain_share > 0 else ""
    # One linear decay over both fine-tuning stages: the AR stage hands over at the lr it reached. (Decaying each
    # to 0 and warming the JANUS stage up to the peak again knocked the AR stage's model back: dev BLEU 12.3 -> 5.9.)
    switch_lr = cfg.lr * (1 - cfg.ar_share)
    if cfg.ar_share > 0:
        _stage(run, "finetune-ar", f"fine-tune en-de NMT with the {cfg.ar_stage_objective} objective for "
                                   f"{budget['finetune_ar_minutes']:.1f} min, lr {cfg.lr:g} -> {switch_lr:g}",
               lambda: finetune(cfg.ar_stage_objective, "finetune-ar", init, budget["finetune_ar_minutes"], cfg.lr,
                                switch_lr))
        init, start = str(last_checkpoint(run / "finetune-ar")), " from the AR stage"
    kl = f" (KL weights x{cfg.kl_scale:g})" if cfg.kl_scale != 1 else ""
    _stage(run, "finetune", f"fine-tune en-de NMT with the JANUS objective{kl}{start} "
                            f"for {budget['finetune_minutes']:.1f} min, lr {switch_lr:g} -> 0",
           lambda: finetune("janus", "finetune", init, budget["finetune_minutes"], switch_lr, 0.0))

    def evaluation():
        model, tok, _ = load_model(last_checkpoint(run / "finetune"))
        pairs = check_task("nmt", info["nmt"], splits=("test",))["test"][:cfg.eval_examples or None]
        results = evaluate(model, tok, pairs, "nmt", modes("all", iterations=(1, 4, 10)),
                           latency_examples=cfg.latency_examples, repeats=1,  # interleaved, one pass: the demo's clock
                           first={"draft": cfg.draft_examples} if cfg.draft_examples else None)
        write_results(results, run / "eval", "nmt", f"en-de NMT, {len(pairs)} test pairs")
        samples = _samples(pairs, results)
        return {"scores": {k: {m: v for m, v in r.items() if m != "hypotheses"} for k, r in results.items()},
                "samples": samples}

    evaluated = _stage(run, "evaluate", "evaluate AR, NAR and draft-and-verify on the test split", evaluation)

    def export():
        # force: a rerun replaces its own export
        out = export_checkpoint(str(last_checkpoint(run / "finetune")), str(run / "export"), force=True)
        problems = verify_export(out)
        if problems:
            raise RuntimeError(problems[0])
        return str(out)

    _stage(run, "export", "export the fine-tuned model (safetensors, config, tokenizer, card) and verify it", export)
    for name in ("pretrain", "finetune-ar", "finetune"):
        if (run / name / "loss.png").is_file():
            shutil.copy(run / name / "loss.png", run / f"loss-{name}.png")
    shutil.copy(run / "eval" / "frontier.png", run / "frontier.png")
    report = _report(run, cfg, info, budget, evaluated, time.perf_counter() - started)
    print("\n" + (run / "eval" / "results.md").read_text())
    print(f"report: {run / 'report.md'}   export: {run / 'export'}")
    return report


def _samples(pairs: list[tuple[str, str]], results: dict, n: int = 5) -> list[dict]:
    """n test pairs spread over the split (both corpora), with the output of every mode that decoded them."""
    scored = max(r["examples"] for r in results.values())
    picks = [round(i * (scored - 1) / max(1, n - 1)) for i in range(min(n, scored))]
    return [{"source": pairs[i][0], "reference": pairs[i][1],
             **{name: r["hypotheses"][i] for name, r in results.items() if i < r["examples"]}} for i in picks]


def _report(run: Path, cfg: DemoConfig, info: dict, budget: dict, evaluated: dict, seconds: float) -> dict:
    stages = {p.stem: json.loads(p.read_text())["seconds"] for p in sorted((run / "stages").glob("*.done"))}
    best = json.loads((run / "finetune" / "checkpoints" / "best.json").read_text())
    dev = json.loads((run / "finetune" / "dev.jsonl").read_text().splitlines()[-1])
    stages_run = [name for name in ("pretrain", "finetune-ar", "finetune") if (run / name / "metrics.jsonl").is_file()]
    last = {name: json.loads((run / name / "metrics.jsonl").read_text().splitlines()[-1]) for name in stages_run}
    trained = []
    if "pretrain" in last:
        trained.append(f"pretrained for {last['pretrain']['step']} steps ({budget['pretrain_minutes']:.1f} min) on "
                       f"monolingual English ({info['english_documents']} documents of the Debian documentation "
                       f"corpus) and the en/de sides of the NMT corpus, then")
    if "finetune-ar" in last:
        trained.append(f"fine-tuned {'' if 'pretrain' in last else 'from scratch '}with the {cfg.ar_stage_objective} objective "
                       f"({'AR and CMLM losses' if cfg.ar_stage_objective == 'ar-cmlm' else 'the AR loss alone'}) for "
                       f"{last['finetune-ar']['step']} steps ({budget['finetune_ar_minutes']:.1f} min, "
                       f"{last['finetune-ar']['tokens']:,} target tokens), then")
    kl = f" (its three KL weights x{cfg.kl_scale:g})" if cfg.kl_scale != 1 else ""
    trained.append(f"fine-tuned {'' if len(last) > 1 else 'from scratch '}with the JANUS objective{kl} for "
                   f"{last['finetune']['step']} steps ({budget['finetune_minutes']:.1f} min, "
                   f"{last['finetune']['tokens']:,} target tokens) on LibreOffice help + DDTP en-de")
    scores = evaluated["scores"]
    modes_shown = list(scores)
    sample_rows = []
    for i, sample in enumerate(evaluated["samples"], 1):
        sample_rows += [f"**{i}.** source: {sample['source']}", "", "| | output |", "|---|---|",
                        f"| reference | {sample['reference']} |",
                        *[f"| {name} | {sample[name]} |" for name in modes_shown if name in sample], ""]
    minutes, more = cfg.minutes, max(90, int(cfg.minutes * 3))

    def trained_for(total: float) -> float:  # the training minutes of a demo of `total` minutes
        return sum(plan(replace(cfg, minutes=total), stages.get("data", 0)).values())

    lines = [f"# JANUS demo ({time.strftime('%Y-%m-%d')}, {seconds / 60:.1f} minutes)", "",
             f"A `{cfg.preset}` JANUS {' '.join(trained)}; {cfg.workers} Ray workers x DeepSpeed ZeRO-2, "
             f"{cfg.token_budget} target tokens per worker per step, "
             f"{'GPU' if _on_gpu() else 'CPU'}.", "",
             "Final training loss: " + ", ".join(f"{name} {last[name]['loss']:.3f}" for name in stages_run) +
             f"; the last checkpoint (step {dev['step']}, dev BLEU {dev['bleu']:.2f} on {cfg.dev_examples} pairs) is "
             f"the one evaluated and exported (the best dev BLEU: {best['value']:.2f} at step {best['step']}).", "",
             (run / "eval" / "results.md").read_text(), "",
             "## Sample translations", "",
             "Five test pairs spread over the split, the reference and every mode's output.", "", *sample_rows,
             "## Curves", "",
             "![pretraining loss](loss-pretrain.png)" if "pretrain" in last else "", "",
             "![AR-stage loss](loss-finetune-ar.png)" if "finetune-ar" in last else "", "",
             "![fine-tuning loss](loss-finetune.png)", "", "![quality / latency](frontier.png)", "",
             "| stage | seconds |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in stages.items()], "",
             "## A better model", "",
             f"This model had {minutes:g} minutes. Every stage scales with the clock: `janus demo --minutes {more} "
             f"--run-dir runs/demo-{more}` trains about {trained_for(more) / trained_for(minutes):.1f}x as long (the "
             f"README has the BLEU of the default and of 90 minutes), and on a GPU the same minutes buy "
             f"far more steps.", ""]
    (run / "report.md").write_text("\n".join(lines))
    return {"results": scores, "stages": stages}


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
