"""`janus study nmt --budget STEPS`: the paper's comparison at our scale. Same model size, data and budget
for every arm, each seed; each arm is a fine-tuning run on the shared engine from scratch, stopped by its
budget or its dev patience, and its best-dev checkpoint is scored on the whole test split with AR beam
search and its NAR decoders:

  NMT (en-de):    ar, ar-rdrop, cmlm, janus, bang, janus-permutation
  summarization:  janus from a JANUS pretraining run vs janus from scratch; bang from scratch
  dialogue:       janus vs bang, from scratch

Writes results.json and results.md (with the commit and the config), results.png and hyps/ (the test
outputs the paired bootstrap reads), all small enough to commit."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from finetune.evaluate import evaluate
from finetune.metrics import PRIMARY
from finetune.tasks import check_task

NMT_ARMS = ("ar", "ar-rdrop", "cmlm", "janus", "bang", "janus-permutation")
OPTIONAL_ARMS = ("bang-cross-stream",)  # run only when named in --arms


@dataclass
class StudyConfig:
    budget: int = 300  # most optimizer steps of a baseline arm
    janus_ratio: float = 1.0  # JANUS arms get budget x this (the release: 200k vs 100k updates, 2.0)
    arm_minutes: float = 0.0  # > 0: a baseline arm also stops after this many minutes of steps (JANUS: x ratio)
    eval_every: int = 0  # dev evaluations every N steps (0: budget // 10); the best-dev checkpoint is scored
    patience: int = 0  # > 0: an arm stops after this many dev evaluations without a new best
    dev_examples: int = 200
    preset: str = "small"
    dropout: float = -1.0  # >= 0 replaces the preset's (the release: 0.3 on IWSLT)
    token_budget: int = 1024  # target tokens per worker per step
    workers: int = 2
    seeds: tuple[int, ...] = (0,)
    lr: float = 1e-3
    warmup_steps: int = 0  # 0: budget // 10
    vocab_size: int = 8000  # of the NMT joint tokenizer and the English one (summarization, dialogue)
    train_pairs: int = 0  # > 0: NMT trains on this fixed subset of the training pairs
    test_examples: int = 0  # 0: the whole test split
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
    from janus.generate import modes_for

    kinds = {"ar": {"ar_beam"}, "ar-rdrop": {"ar_beam"}, "cmlm": {"nar"}}.get(objective_name, {"ar_beam", "nar", "bang_nar", "bang_semi"})
    return [m for m in modes_for(objective_name, iterations=(1, 4, 10)) if m.kind in kinds]


def _ratio(study: StudyConfig, objective_name: str) -> float:
    return study.janus_ratio if objective_name.startswith("janus") else 1.0


def _steps(study: StudyConfig, objective_name: str) -> int:
    return round(study.budget * _ratio(study, objective_name))


def _arm(study: StudyConfig, out: Path, runs: Path, task: str, data: Path, objective_name: str, init: str,
         tokenizer: Path, name: str, seed: int) -> dict:
    from finetune.evaluate import write_results
    from finetune.run import load_finetune_config, run_finetune
    from pretrain import checkpoint
    from pretrain.artifacts import load_model

    run_dir = runs / name
    steps = _steps(study, objective_name)
    every = study.eval_every or max(1, study.budget // 10)
    train, dev = load_finetune_config("small")
    train = replace(train, run_dir=str(run_dir), model_preset=study.preset, objective=objective_name,
                    max_steps=steps, max_minutes=study.arm_minutes * _ratio(study, objective_name),
                    checkpoint_every=every, dropout=study.dropout, token_budget=study.token_budget,
                    window=study.token_budget * 8, num_workers=study.workers, seed=seed,
                    warmup_steps=study.warmup_steps or max(1, study.budget // 10), lr=study.lr,
                    tokenizer=str(tokenizer) if init == "scratch" else "")
    dev = replace(dev, eval_every=every, patience=study.patience, dev_examples=study.dev_examples)
    print(f"study: {name}: {objective_name} on {task}, at most {steps} steps from {init}, seed {seed}", flush=True)
    run_finetune(task, str(data), init, train, dev)  # a run directory with checkpoints resumes
    model, tok, _ = load_model(run_dir)  # the best-dev checkpoint
    pairs = check_task(task, data, splits=("test",))["test"][:study.test_examples or None]
    results = evaluate(model, tok, pairs, task, _settings(objective_name), latency_examples=study.latency_examples)
    write_results(results, run_dir / "test", task, f"{name}: {len(pairs)} test examples")
    save_hypotheses(results, out / "hyps" / name)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    dev = [json.loads(line) for line in (run_dir / "dev.jsonl").read_text().splitlines()] \
        if (run_dir / "dev.jsonl").is_file() else []
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    return {"task": task, "objective": objective_name, "init": init if init == "scratch" else "pretrained",
            "seed": seed, "steps": metrics[-1]["step"], "max_steps": steps, "train_seconds": metrics[-1]["elapsed_s"],
            "target_tokens": metrics[-1]["tokens"], "final_loss": metrics[-1]["loss"],
            "best_dev": best["value"], "best_dev_step": best["step"], "dev_metric": best["metric"],
            "stopped": _stopped(run_dir),
            "dev_curve": [[d["step"], d[best["metric"]]] for d in dev], "test_examples": len(pairs),
            "hypotheses": f"hyps/{name}",
            "checkpoint_step": checkpoint.best_step(run_dir / "checkpoints"),
            "results": {k: {m: v for m, v in r.items() if m != "hypotheses"} for k, r in results.items()}}


def _stopped(run_dir: Path) -> str:
    """Why the run ended: max_steps, clock (arm_minutes) or patience (pretrain.trainer writes it)."""
    path = run_dir / "stopped.json"
    return json.loads(path.read_text())["why"] if path.is_file() else "unknown"


def subset(data: Path, n: int, out: Path, seed: int = 0) -> Path:
    """A fixed random subset of n training pairs (dev and test whole), written once as a task directory."""
    import random

    from janus.files import atomic_write

    target = out / f"data-{data.name}-{n}"
    if (target / "train.tgt").is_file():
        return target
    src, tgt = (data / "train.src").read_text().splitlines(), (data / "train.tgt").read_text().splitlines()
    keep = sorted(random.Random(seed).sample(range(len(src)), min(n, len(src))))
    target.mkdir(parents=True, exist_ok=True)
    for split in ("dev", "test"):
        for side in ("src", "tgt"):
            atomic_write(target / f"{split}.{side}", (data / f"{split}.{side}").read_bytes())
    atomic_write(target / "train.src", "".join(src[i] + "\n" for i in keep).encode())
    atomic_write(target / "train.tgt", "".join(tgt[i] + "\n" for i in keep).encode())  # last: marks it whole
    return target


def _pretrain(study: StudyConfig, runs: Path, tokenizer: Path) -> Path:
    """A JANUS pretraining run on the English corpus, for the summarization pretrained-vs-scratch arms."""
    from pretrain.config import load_config
    from pretrain.datasets import fetch
    from pretrain.inputs import read_documents
    from pretrain.shards import read_index, write_block_shards
    from pretrain.launch import run_training

    shards = runs / "pretrain-shards"
    if not (shards / "index.json").is_file():
        # every k-th document (the corpus is grouped by source) for about twice the words the budget
        # consumes, rather than tokenizing all 18M words
        docs = list(read_documents([fetch("pretrain-en") / "train.txt"]))
        wanted = 2 * study.budget * study.workers * study.token_budget
        docs = docs[::max(1, sum(len(d.split()) for d in docs) // wanted)]
        write_block_shards(docs, tokenizer, shards, seq_len=128, docs_per_shard=max(1, len(docs) // 8))
    read_index(shards)
    run_dir = runs / "pretrain-janus"
    run_training(replace(load_config("small"), shards=str(shards), tokenizer=str(tokenizer), run_dir=str(run_dir),
                         model_preset=study.preset, max_steps=study.budget, checkpoint_every=study.budget,
                         token_budget=study.token_budget, num_workers=study.workers, seed=study.seeds[0],
                         lr=study.lr, warmup_steps=max(1, study.budget // 10), max_source_tokens=128,
                         max_target_tokens=128))
    return run_dir


def english_tokenizer(vocab_size: int = 8000) -> Path:
    """One English tokenizer for pretraining, summarization and dialogue (trained once, cached)."""
    from itertools import islice

    from janus.tokenizer import train_tokenizer
    from pretrain.datasets import fetch
    from pretrain.inputs import read_documents
    from pretrain.packages import cache_dir

    path = cache_dir() / "tokenizers" / f"english-{vocab_size}-cc0.9995.model"
    if not path.is_file():
        texts = list(islice(read_documents([fetch("pretrain-en") / "train.txt"]), 200_000))
        texts += [s for name in ("summarization", "dialogue") for p in [fetch(name)]
                  for s in (p / "train.src").read_text().splitlines()[:20000]]
        train_tokenizer(texts, path, vocab_size=vocab_size)
    return path


REGIME = ("budget", "janus_ratio", "arm_minutes", "eval_every", "patience", "dev_examples", "preset", "dropout",
          "token_budget", "workers", "lr", "warmup_steps", "vocab_size", "train_pairs", "test_examples")


def _finished(study: StudyConfig, out: Path) -> dict[str, dict]:
    """The (arm, seed) runs already in `out/results.json`: the file is committed, so a study continues on a new
    machine where its run directories are gone. Runs of another regime are not mixed in."""
    path = out / "results.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    old = report["config"]
    differ = [k for k in REGIME if k in old and old[k] != getattr(study, k)]
    if differ:
        raise ValueError(f"{path}: made with other {', '.join(f'{k}={old[k]!r}' for k in differ)}; rerun with "
                         "those values to continue it, or give another --out")
    return report["arms"]


def run_study(study: StudyConfig, out: str | Path = "runs/study", runs: str | Path | None = None) -> dict:
    """Seed by seed, every arm; after each (arm, seed) run the report is rewritten, so what is finished is
    never lost and rerunning the same command continues with the first run not yet in results.json.
    `out` holds what is worth committing (results.{md,json,png}, hyps/); `runs` (default out/runs) the run
    directories and the data subset."""
    from pretrain.datasets import fetch, nmt_tokenizer

    out = Path(out)
    runs = Path(runs) if runs else out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    rows = _finished(study, out)
    plan = []  # (name, task, data, objective, init, tokenizer)
    data_for = {}
    if "nmt" in study.tasks:
        data, tok = nmt_tokenizer(study.vocab_size)
        data_for["nmt"] = subset(data, study.train_pairs, runs) if study.train_pairs else data
        plan += [(f"nmt-{o}", "nmt", data_for["nmt"], o, "scratch", tok.path) for o in study.arms]
    english = english_tokenizer(study.vocab_size) if {"summarization", "dialogue"} & set(study.tasks) else None
    for task in ("summarization", "dialogue"):
        if task in study.tasks:
            data_for[task] = fetch(task)
            plan.append((f"{task}-janus-scratch", task, data_for[task], "janus", "scratch", english))
            if "bang" in study.arms:
                plan.append((f"{task}-bang-scratch", task, data_for[task], "bang", "scratch", english))
    if "summarization" in study.tasks:
        plan.append(("summarization-janus-pretrained", "summarization", data_for["summarization"], "janus",
                     "pretrained", english))
    refs = {task: [t for _, t in check_task(task, d, splits=("test",))["test"][:study.test_examples or None]]
            for task, d in data_for.items()}
    pretrained = None
    for seed in study.seeds:
        for name, task, data, objective_name, init, tokenizer in plan:
            key = f"{name}-s{seed}"
            if key in rows:
                continue
            if init == "pretrained":
                pretrained = pretrained or str(_pretrain(study, runs, english))
                init = pretrained
            rows[key] = _arm(study, out, runs, task, data, objective_name, init, tokenizer, name=key, seed=seed)
            report = _report(study, out, rows, refs)
    report = _report(study, out, rows, refs)
    print((out / "results.md").read_text())
    return report


def _report(study: StudyConfig, out: Path, rows: dict, refs: dict) -> dict:
    from janus.files import atomic_write

    summary = aggregate(rows)
    report = {"date": time.strftime("%Y-%m-%d"), "commit": _commit(), "config": asdict(study),
              "load_average": os.getloadavg()[0], "arms": rows, "summary": summary,
              "claims": claims(rows, summary, out, refs)}
    plot(rows, summary, out / "results.png")
    atomic_write(out / "results.md", markdown(report))
    atomic_write(out / "results.json", json.dumps(report, indent=2) + "\n")  # last: it marks the runs done
    return report


def save_hypotheses(results: dict, path: Path) -> None:
    """Each setting's test outputs, gzipped, beside results.json: the paired bootstrap needs them, and they
    are small enough to commit with it."""
    import gzip

    from janus.files import atomic_write

    path.mkdir(parents=True, exist_ok=True)
    for setting, r in results.items():
        text = "".join(h + "\n" for h in r["hypotheses"])
        atomic_write(path / f"{setting}.hyp.gz", gzip.compress(text.encode(), mtime=0))


def _arm_name(key: str) -> str:
    return key.rsplit("-s", 1)[0]


def aggregate(rows: dict) -> dict:
    """Per arm (all its seeds): mean and standard deviation of every test score, the steps, the time."""
    arms: dict[str, list[dict]] = {}
    for key, row in rows.items():
        arms.setdefault(_arm_name(key), []).append(row)
    out = {}
    for name, runs in arms.items():
        metric = PRIMARY[runs[0]["task"]]
        scores = {setting: [r["results"][setting][metric] for r in runs] for setting in runs[0]["results"]}
        out[name] = {"task": runs[0]["task"], "metric": metric, "seeds": [r["seed"] for r in runs],
                     "scores": {k: {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
                                    "runs": v} for k, v in scores.items()},
                     "latency_ms_b1": {k: statistics.median(r["results"][k]["latency_ms_b1"] for r in runs)
                                       for k in scores},
                     "steps": statistics.mean(r["steps"] for r in runs),
                     "train_minutes": statistics.mean(r["train_seconds"] for r in runs) / 60,
                     "target_tokens": statistics.mean(r["target_tokens"] for r in runs),
                     "best_dev": statistics.mean(r["best_dev"] for r in runs),
                     "best_dev_step": statistics.mean(r["best_dev_step"] for r in runs),
                     "stopped": sorted({r["stopped"] for r in runs})}
    return out


def _hypotheses(rows: dict, out: Path, arm: str, setting: str) -> dict[int, list[str]]:
    import gzip

    found = {}
    for key, row in rows.items():
        path = out / row["hypotheses"] / f"{setting}.hyp.gz"
        if _arm_name(key) == arm and path.is_file():
            found[row["seed"]] = gzip.decompress(path.read_bytes()).decode().splitlines()
    return found


def claims(rows: dict, summary: dict, out: Path, refs: dict[str, list[str]]) -> list[dict]:
    """The paper's claims on these runs: the difference of the seed means, and sacreBLEU's paired bootstrap
    over every seed's outputs pooled (seed s of one arm against seed s of the other, same references).
    Holds: the difference reaches the margin and, for a claimed gain, is positive with p < 0.05."""
    from finetune.metrics import paired_bootstrap

    found = []

    def claim(text, a, a_setting, b, b_setting, margin):
        if a not in summary or b not in summary or a_setting not in summary[a]["scores"] \
                or b_setting not in summary[b]["scores"]:
            return
        ma, mb = summary[a]["scores"][a_setting]["mean"], summary[b]["scores"][b_setting]["mean"]
        p = None
        ha, hb = _hypotheses(rows, out, a, a_setting), _hypotheses(rows, out, b, b_setting)
        seeds = sorted(set(ha) & set(hb))
        task_refs = refs.get(summary[a]["task"])
        if seeds and task_refs and summary[a]["metric"] == "bleu":
            if all(len(ha[s]) == len(task_refs) == len(hb[s]) for s in seeds):
                p = paired_bootstrap([h for s in seeds for h in ha[s]], [h for s in seeds for h in hb[s]],
                                     [r for _ in seeds for r in task_refs])
        diff = ma - mb
        if max(ma, mb) < 1.0:
            verdict = "no verdict (both below 1 point)"
        elif diff < margin:
            verdict = "does not hold"
        elif margin >= 0 and (diff <= 0 or (p is not None and p >= 0.05)):  # a gain must be one, significantly
            verdict = "no verdict (not significant)"
        else:
            verdict = "holds"
        found.append({"claim": text, "scores": [round(ma, 2), round(mb, 2)],
                      "sd": [round(summary[a]["scores"][a_setting]["sd"], 2),
                             round(summary[b]["scores"][b_setting]["sd"], 2)],
                      "difference": round(diff, 2), "needed": margin, "p_value": p, "seeds": seeds,
                      "verdict": verdict, "holds": verdict == "holds" if not verdict.startswith("no") else None})

    claim("JANUS-AR >= AR-only + 1 BLEU", "nmt-janus", "ar_beam5", "nmt-ar", "ar_beam5", 1.0)
    claim("JANUS-AR >= AR with R-Drop", "nmt-janus", "ar_beam5", "nmt-ar-rdrop", "ar_beam5", 0.0)
    claim("JANUS-NAR(T=10) >= CMLM-only(T=10) + 2 BLEU", "nmt-janus", "nar_T10", "nmt-cmlm", "nar_T10", 2.0)
    claim("JANUS-NAR(T=10) within 2 BLEU of AR-only beam 5", "nmt-janus", "nar_T10", "nmt-ar", "ar_beam5", -2.0)
    claim("JANUS-AR >= BANG-AR (NMT)", "nmt-janus", "ar_beam5", "nmt-bang", "ar_beam5", 0.0)
    claim("JANUS-NAR(T=10) >= BANG-NAR (NMT)", "nmt-janus", "nar_T10", "nmt-bang", "bang_nar", 0.0)
    for task in ("summarization", "dialogue"):
        claim(f"JANUS-AR >= BANG-AR ({task})", f"{task}-janus-scratch", "ar_beam5", f"{task}-bang-scratch",
              "ar_beam5", 0.0)
        claim(f"JANUS-NAR(T=10) >= BANG-NAR ({task})", f"{task}-janus-scratch", "nar_T10",
              f"{task}-bang-scratch", "bang_nar", 0.0)
    claim("pretrained JANUS >= scratch JANUS (summarization, AR)", "summarization-janus-pretrained", "ar_beam5",
          "summarization-janus-scratch", "ar_beam5", 0.0)
    return found


def markdown(report: dict) -> str:
    c = report["config"]
    seeds = ", ".join(str(s) for s in c["seeds"])
    patience = f", patience {c['patience']} evaluations" if c["patience"] else ""
    clock = f" or {c['arm_minutes']:g} minutes" if c.get("arm_minutes") else ""
    lines = [f"# JANUS study ({report['date']}, commit {report['commit']}, load average "
             f"{report.get('load_average', float('nan')):.1f} at the end)", "",
             f"Every arm: `{c['preset']}` model, dropout {c['dropout'] if c['dropout'] >= 0 else 'of the preset'}, "
             f"at most {c['budget']} steps{clock} (JANUS arms x{c['janus_ratio']:g}) x {c['workers']} workers x "
             f"{c['token_budget']} target tokens, dev every {c['eval_every'] or c['budget'] // 10} steps"
             f"{patience}, "
             f"scored with its best-dev checkpoint; seeds {seeds}; from scratch unless marked; "
             f"{'train subset ' + format(c['train_pairs'], ',') + ' pairs; ' if c['train_pairs'] else ''}"
             f"test = {'the whole split' if not c['test_examples'] else 'first ' + str(c['test_examples']) + ' examples'}; "
             f"latency at batch 1 over {c['latency_examples']} examples; peak lr {c['lr']}, vocabulary "
             f"{c.get('vocab_size', 8000)}.", "",
             "| arm | seeds | steps | train min | target tokens | best dev (step) | setting | test score mean ± sd | "
             "latency b1 (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, arm in report["summary"].items():
        for setting, sc in arm["scores"].items():
            lines.append(f"| {name} | {len(arm['seeds'])} | {arm['steps']:.0f} ({'/'.join(arm['stopped'])}) | "
                         f"{arm['train_minutes']:.1f} | {arm['target_tokens'] / 1e6:.2f}M | {arm['best_dev']:.2f} "
                         f"({arm['best_dev_step']:.0f}) | {setting} | {sc['mean']:.2f} ± {sc['sd']:.2f} | "
                         f"{arm['latency_ms_b1'][setting]:.1f} |")
    lines += ["", "## The paper's claims at this scale", "",
              "| claim | mean ± sd | difference | needed | p (paired bootstrap) | verdict |", "|---|---|---|---|---|---|"]
    for cl in report["claims"]:
        p = "" if cl["p_value"] is None else f"{cl['p_value']:.3f}"
        lines.append(f"| {cl['claim']} | {cl['scores'][0]:.2f} ± {cl['sd'][0]:.2f} vs {cl['scores'][1]:.2f} ± "
                     f"{cl['sd'][1]:.2f} | {cl['difference']:+.2f} | {cl['needed']:+} | {p} | {cl['verdict']} |")
    lines += ["", "Per run (arm-seed): `arms` in `results.json`; each run's test outputs: `hyps/<arm>-s<seed>/`.", "",
              "![results](results.png)", ""]
    return "\n".join(lines)


def plot(rows: dict, summary: dict, path: Path) -> None:
    """Left: every run's dev curve (the metric that picks its checkpoint); right: test quality against
    batch-1 latency, seed means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (dev, front) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {name: f"C{i % 10}" for i, name in enumerate(summary)}
    for key, row in rows.items():
        name = _arm_name(key)
        if row.get("dev_curve"):
            steps, values = zip(*row["dev_curve"])
            dev.plot(steps, values, color=colours[name], alpha=0.8, linewidth=1.2,
                     label=name if key.endswith(f"-s{summary[name]['seeds'][0]}") else None)
    dev.set_xlabel("step")
    dev.set_ylabel("dev metric (AR greedy; CMLM: NAR T=4)")
    dev.set_title("dev curves, every seed")
    dev.grid(alpha=0.3)
    dev.legend(fontsize=7)
    for name, arm in summary.items():
        for setting, sc in arm["scores"].items():
            front.errorbar(arm["latency_ms_b1"][setting], sc["mean"], yerr=sc["sd"], color=colours[name],
                           fmt="o" if setting.startswith("ar") else "^", capsize=3)
            front.annotate(f"{name}:{setting}", (arm["latency_ms_b1"][setting], sc["mean"]), fontsize=6,
                           xytext=(3, 3), textcoords="offset points")
    front.set_xscale("log")
    top = max((sc["mean"] + sc["sd"] for arm in summary.values() for sc in arm["scores"].values()), default=1.0)
    front.set_ylim(0, max(1.0, 1.15 * top))  # from zero: a spread of 0.1 BLEU must not look like a frontier
    front.set_xlabel("latency per example at batch 1 (ms)")
    front.set_ylabel("test score (BLEU / ROUGE-L / BLEU-2), mean ± sd over seeds")
    front.set_title("quality vs latency (o = AR, ^ = NAR)")
    front.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
