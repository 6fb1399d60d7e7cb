"""`janus study nmt --budget STEPS`: the paper's comparison at our scale. Same model size, data, seed and step
budget for every arm; each arm is a fine-tuning run on the shared engine from scratch, evaluated on the
same test examples with AR beam search and its NAR decoders:

  NMT (en-de):    ar, cmlm, janus, bang, janus-permutation
  summarization:  janus from a JANUS pretraining run vs janus from scratch; bang from scratch
  dialogue:       janus vs bang, from scratch

Writes results.json and results.md (with the commit and the config) and results.png."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from finetune.evaluate import evaluate
from finetune.metrics import PRIMARY
from finetune.tasks import check_task

NMT_ARMS = ("ar", "ar-rdrop", "cmlm", "janus", "bang", "janus-permutation")
OPTIONAL_ARMS = ("bang-cross-stream",)  # run only when named in --arms


@dataclass
class StudyConfig:
    budget: int = 300  # optimizer steps per arm
    preset: str = "small"
    token_budget: int = 1024  # target tokens per worker per step
    workers: int = 2
    seed: int = 0
    lr: float = 1e-3
    vocab_size: int = 8000  # of the NMT joint tokenizer and the English one (summarization, dialogue)
    test_examples: int = 200
    latency_examples: int = 10
    tasks: tuple[str, ...] = ("nmt", "summarization", "dialogue")
    arms: tuple[str, ...] = NMT_ARMS


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent)
    return done.stdout.strip() or "unknown"


def _settings(objective_name: str):
    """The decoders `janus evaluate --mode all` offers this arm's model, less AR greedy and draft; an AR-only
    arm is decoded AR and a CMLM-only one NAR."""
    from janus.generate import modes
    from janus.objective import objective

    trained = objective(objective_name)
    kinds = {"ar": {"ar_beam"}, "ar-rdrop": {"ar_beam"}, "cmlm": {"nar"}}.get(objective_name, {"ar_beam", "nar", "bang_nar", "bang_semi"})
    return [m for m in modes("all", beam=5, iterations=(1, 4, 10), bang_streams=trained.bang_streams,
                             bang_cross_stream=trained.bang_cross_stream) if m.kind in kinds]


def _arm(study: StudyConfig, out: Path, task: str, data: Path, objective_name: str, init: str, tokenizer: Path,
         name: str) -> dict:
    from finetune.evaluate import load_model
    from finetune.run import run_finetune

    run_dir = out / "runs" / name
    overrides = [f"run_dir={run_dir}", f"model_preset={study.preset}", f"objective={objective_name}",
                 f"max_steps={study.budget}", f"checkpoint_every={study.budget}", "eval_every=0",
                 f"token_budget={study.token_budget}", f"window={study.token_budget * 8}",
                 f"num_workers={study.workers}", f"seed={study.seed}", f"warmup_steps={max(1, study.budget // 10)}",
                 f"lr={study.lr}", *([f"tokenizer={tokenizer}"] if init == "scratch" else [])]
    print(f"study: {name}: {objective_name} on {task}, {study.budget} steps from {init}", flush=True)
    start = time.perf_counter()
    run_finetune(task, str(data), init, "small", overrides)
    train_s = time.perf_counter() - start
    model, tok, _ = load_model(run_dir)
    pairs = check_task(task, data, splits=("test",))["test"][:study.test_examples]
    results = evaluate(model, tok, pairs, task, _settings(objective_name), latency_examples=study.latency_examples)
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {"task": task, "objective": objective_name, "init": init if init == "scratch" else "pretrained",
            "train_seconds": train_s, "final_loss": final["loss"],
            "results": {k: {m: v for m, v in r.items() if m != "hypotheses"} for k, r in results.items()}}


def _pretrain(study: StudyConfig, out: Path, tokenizer: Path) -> Path:
    """A JANUS pretraining run on the English corpus, for the summarization pretrained-vs-scratch arms."""
    from pretrain.config import load_config
    from pretrain.datasets import fetch
    from pretrain.inputs import read_documents
    from pretrain.shards import read_index, write_block_shards
    from pretrain.trainer import run_training

    shards = out / "pretrain-shards"
    if not (shards / "index.json").is_file():
        # every k-th document (the corpus is grouped by source) for about twice the words the budget
        # consumes, rather than tokenizing all 18M words
        docs = list(read_documents([fetch("pretrain-en") / "train.txt"]))
        wanted = 2 * study.budget * study.workers * study.token_budget
        docs = docs[::max(1, sum(len(d.split()) for d in docs) // wanted)]
        write_block_shards(docs, tokenizer, shards, seq_len=128, docs_per_shard=max(1, len(docs) // 8))
    read_index(shards)
    run_dir = out / "runs" / "pretrain-janus"
    run_training(load_config("small", [f"shards={shards}", f"tokenizer={tokenizer}", f"run_dir={run_dir}",
                                       f"model_preset={study.preset}", f"max_steps={study.budget}",
                                       f"checkpoint_every={study.budget}", f"token_budget={study.token_budget}",
                                       f"num_workers={study.workers}", f"seed={study.seed}", f"lr={study.lr}",
                                       f"warmup_steps={max(1, study.budget // 10)}", "max_source_tokens=128",
                                       "max_target_tokens=128"]))
    return run_dir


def english_tokenizer(vocab_size: int = 8000) -> Path:
    """One English tokenizer for pretraining, summarization and dialogue (trained once, cached)."""
    from itertools import islice

    from janus.tokenizer import train_tokenizer
    from pretrain.datasets import fetch
    from pretrain.inputs import read_documents
    from pretrain.registry import cache_dir

    path = cache_dir() / "tokenizers" / f"english-{vocab_size}-cc0.9995.model"
    if not path.is_file():
        texts = list(islice(read_documents([fetch("pretrain-en") / "train.txt"]), 200_000))
        texts += [s for name in ("summarization", "dialogue") for p in [fetch(name)]
                  for s in (p / "train.src").read_text().splitlines()[:20000]]
        train_tokenizer(texts, path, vocab_size=vocab_size)
    return path


def run_study(study: StudyConfig, out: str | Path = "runs/study") -> dict:
    from pretrain.datasets import fetch, nmt_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    done = out / "arms.json"  # finished arms survive an interruption; rerunning continues
    if done.is_file():
        rows = json.loads(done.read_text())

    def arm(name, *args):
        if name not in rows:
            rows[name] = _arm(study, out, *args, name=name)
            done.write_text(json.dumps(rows, indent=1))

    if "nmt" in study.tasks:
        data, tok = nmt_tokenizer(study.vocab_size)
        for objective_name in study.arms:
            arm(f"nmt-{objective_name}", "nmt", data, objective_name, "scratch", tok.path)
    english = english_tokenizer(study.vocab_size) if {"summarization", "dialogue"} & set(study.tasks) else None
    if "summarization" in study.tasks:
        data = fetch("summarization")
        arm("summarization-janus-scratch", "summarization", data, "janus", "scratch", english)
        if "bang" in study.arms:
            arm("summarization-bang-scratch", "summarization", data, "bang", "scratch", english)
        if "summarization-janus-pretrained" not in rows:
            pre = _pretrain(study, out, english)
            arm("summarization-janus-pretrained", "summarization", data, "janus", str(pre), english)
    if "dialogue" in study.tasks:
        data = fetch("dialogue")
        arm("dialogue-janus-scratch", "dialogue", data, "janus", "scratch", english)
        if "bang" in study.arms:
            arm("dialogue-bang-scratch", "dialogue", data, "bang", "scratch", english)
    report = {"date": time.strftime("%Y-%m-%d"), "commit": _commit(), "config": asdict(study), "arms": rows,
              "claims": claims(rows)}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report))
    plot(rows, out / "results.png")
    print((out / "results.md").read_text())
    return report


def _score(rows, name, setting):
    r = rows.get(name, {}).get("results", {}).get(setting)
    return None if r is None else r[PRIMARY[rows[name]["task"]]]


def claims(rows: dict) -> list[dict]:
    """The paper's claims, checked on these numbers."""
    out = []

    def claim(text, a, b, margin):
        if a is not None and b is not None:
            # below 1 point on both sides the models have not learned the task: no verdict
            holds = None if max(a, b) < 1.0 else a - b >= margin
            out.append({"claim": text, "ours": round(a - b, 2), "scores": [round(a, 2), round(b, 2)],
                        "needed": margin, "holds": holds})

    claim("JANUS-AR >= AR-only + 1 BLEU", _score(rows, "nmt-janus", "ar_beam5"), _score(rows, "nmt-ar", "ar_beam5"), 1)
    claim("JANUS-NAR(T=10) >= CMLM-only(T=10) + 2 BLEU", _score(rows, "nmt-janus", "nar_T10"),
          _score(rows, "nmt-cmlm", "nar_T10"), 2)
    claim("JANUS-AR >= BANG-AR (NMT)", _score(rows, "nmt-janus", "ar_beam5"), _score(rows, "nmt-bang", "ar_beam5"), 0)
    claim("JANUS-NAR(T=10) >= BANG-NAR (NMT)", _score(rows, "nmt-janus", "nar_T10"),
          _score(rows, "nmt-bang", "bang_nar"), 0)
    for task in ("summarization", "dialogue"):
        claim(f"JANUS-AR >= BANG-AR ({task})", _score(rows, f"{task}-janus-scratch", "ar_beam5"),
              _score(rows, f"{task}-bang-scratch", "ar_beam5"), 0)
        claim(f"JANUS-NAR(T=10) >= BANG-NAR ({task})", _score(rows, f"{task}-janus-scratch", "nar_T10"),
              _score(rows, f"{task}-bang-scratch", "bang_nar"), 0)
    claim("pretrained JANUS >= scratch JANUS (summarization, AR)",
          _score(rows, "summarization-janus-pretrained", "ar_beam5"),
          _score(rows, "summarization-janus-scratch", "ar_beam5"), 0)
    return out


def markdown(report: dict) -> str:
    c = report["config"]
    lines = [f"# JANUS study ({report['date']}, commit {report['commit']})", "",
             f"Every arm: `{c['preset']}` model, {c['budget']} steps x {c['workers']} workers x {c['token_budget']} "
             f"target tokens, seed {c['seed']}, from scratch unless marked; test = first {c['test_examples']} "
             f"examples; latency at batch 1 over {c['latency_examples']} examples; peak lr {c['lr']}, "
             f"vocabulary {c.get('vocab_size', 8000)}.", "",
             "| arm | task | metric | setting | score | latency b1 (ms) | speed-up vs AR beam 5 | final loss |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in report["arms"].items():
        metric = PRIMARY[row["task"]]
        for setting, r in row["results"].items():
            speed = r.get("speedup_vs_ar_beam5")
            lines.append(f"| {name} | {row['task']} | {metric} | {setting} | {r[metric]:.2f} | {r['latency_ms_b1']:.1f} | "
                         f"{'' if speed is None else f'{speed:.2f}x'} | {row['final_loss']:.3f} |")
    lines += ["", "## The paper's claims at this scale", "",
              "| claim | scores | difference | needed | holds |", "|---|---|---|---|---|"]
    verdict = {True: "yes", False: "no", None: "no verdict (both below 1 point)"}
    for cl in report["claims"]:
        lines.append(f"| {cl['claim']} | {cl['scores'][0]:.2f} vs {cl['scores'][1]:.2f} | {cl['ours']:+.2f} | "
                     f"{cl['needed']:+} | {verdict[cl['holds']]} |")
    lines += ["", "![results](results.png)", ""]
    return "\n".join(lines)


def plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (name, row) in enumerate(rows.items()):
        metric = PRIMARY[row["task"]]
        for setting, r in row["results"].items():
            ax.scatter(r["latency_ms_b1"], r[metric], color=f"C{i % 10}", marker="o" if setting.startswith("ar") else "^")
            ax.annotate(f"{name}:{setting}", (r["latency_ms_b1"], r[metric]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("latency per example at batch 1 (ms)")
    ax.set_ylabel("primary metric (BLEU / ROUGE-L / BLEU-2)")
    ax.set_title("study: quality vs latency per arm (o = AR, ^ = NAR)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
