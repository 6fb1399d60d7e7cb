"""The `janus` command line."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from janus.files import describe

# glibc serves every large tensor with a fresh mmap and returns it on free, so each step page-faults
# its activations in again: measured here, a `small` JANUS step at 4k target tokens ran 2.2x faster
# with mmap off and no trimming. Set before the interpreter starts (glibc reads them at its first malloc).
ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def _reexec_with_allocator_env(argv: list[str] | None) -> None:
    if argv is None and any(k not in os.environ for k in ALLOCATOR_ENV):
        os.environ.update(ALLOCATOR_ENV)
        os.execv(sys.executable, [sys.executable, "-m", "cluster.cli", *sys.argv[1:]])


def _bench_model(args) -> int:
    from pretrain.bench_model import bench_model

    bench_model(args.preset, args.out, target_tokens=args.target_tokens, threads=args.threads)
    return 0


def _data_fetch(args) -> int:
    from pretrain.datasets import fetch

    print(fetch(args.name, args.out, args.pair))
    return 0


def _data_tokenizer(args) -> int:
    from itertools import islice

    from janus.tokenizer import train_tokenizer
    from pretrain.inputs import read_documents

    texts = list(islice(read_documents(args.inputs), args.sample))
    if not texts:
        raise ValueError(f"no text found in {args.inputs}")
    tok = train_tokenizer(texts, args.out, vocab_size=args.vocab_size, model_type=args.model_type,
                          character_coverage=args.character_coverage)
    print(f"{args.out}: {tok.vocab_size} pieces from {len(texts)} texts")
    return 0


def _data_shard(args) -> int:
    from pathlib import Path

    from pretrain.inputs import read_documents, read_pair_input
    from pretrain.shards import write_block_shards, write_pair_shards

    if args.blocks:
        index = write_block_shards(list(read_documents(args.inputs)), args.tokenizer, args.out, seq_len=args.seq_len,
                                   docs_per_shard=args.per_shard, workers=args.workers)
    else:
        if len(args.inputs) != 1:
            raise ValueError("pair shards take one input: a task directory or a .jsonl of src/tgt")
        index = write_pair_shards(read_pair_input(args.inputs[0], args.split), args.tokenizer,
                                  Path(args.out), pairs_per_shard=args.per_shard, workers=args.workers)
    print(f"{args.out}: {len(index['shards'])} shards, {index['samples']} samples, {index['tokens']} tokens")
    return 0


def _pretrain(args) -> int:
    from pretrain.config import load_config
    from pretrain.launch import run_training

    cfg = load_config(args.config, args.overrides)
    return _train(lambda: print(f"run directory: {run_training(cfg, args.address)}"), "pretrain")


def _train(job, command: str) -> int:
    """Runs a training job; a preemption or a divergence exits with its own documented code."""
    from pretrain.launch import DIVERGED_EXIT_CODE, INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, Diverged, Preempted

    try:
        job()
    except Preempted as stop:
        print(f"janus {command}: {stop}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE if stop.interrupted else PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
        print(f"janus {command}: stopped at once; rerunning resumes from the newest complete checkpoint",
              file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Diverged as stop:
        print(f"janus {command}: error: {stop}", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    return 0


def _finetune(args) -> int:
    from finetune.run import load_finetune_config, run_finetune

    cfg, dev = load_finetune_config(args.config, args.overrides)
    return _train(lambda: print(f"run directory: {run_finetune(args.task, args.data, args.init, cfg, dev, args.address)}"),
                  "finetune")


def _decoding_job(args):
    """(model, tokenizer, task, pairs, settings) for `janus evaluate` and `janus bench decode`."""
    from pretrain.artifacts import load_model
    from finetune.tasks import check_task
    from janus.generate import modes, modes_for

    try:
        iterations = tuple(int(t) for t in args.iterations.split(","))
    except ValueError:
        raise ValueError(f"--iterations {args.iterations!r}: give comma-separated integers, e.g. 1,4,10") from None
    model, tok, made = load_model(args.model)
    train = made["train"]
    task = args.task or made["finetune"].get("task") or "nmt"
    pairs = check_task(task, args.data, splits=(args.split,))[args.split][:args.max_examples or None]
    settings = modes_for(train.get("objective") or "janus", args.mode, beam=args.beam, iterations=iterations,
                         length_beam=args.length_beam)
    if args.mode in ("draft", "nar"):  # speed-ups are measured against AR in the same run
        settings = modes("ar", beam=args.beam) + settings
    return model, tok, task, pairs, settings


def _evaluate(args) -> int:
    from pathlib import Path

    from finetune.evaluate import evaluate, write_results

    model, tok, task, pairs, settings = _decoding_job(args)
    results = evaluate(model, tok, pairs, task, settings, latency_examples=args.latency_examples,
                       repeats=args.repeats)
    out = Path(args.out)
    write_results(results, out, task, f"{task}: {len(pairs)} {args.split} examples, {args.model}")
    print((out / "results.md").read_text())
    print(f"written: {out}/metrics.json, results.md, frontier.png, *.hyp")
    return 0


def _export(args) -> int:
    from janus.export import verify_export
    from pretrain.exporting import export_checkpoint

    if args.verify:
        problems = verify_export(args.source)
        for p in problems:
            print(f"janus export --verify: {p}", file=sys.stderr)
        if not problems:
            print(f"{args.source}: every file matches SHA256SUMS")
        return 1 if problems else 0
    if not args.out:
        raise ValueError("give --out DIR for the export (or --verify to check one)")
    print(f"export: {export_checkpoint(args.source, args.out, force=args.force)}")
    return 0


def _janus_command(rest: list[str]) -> list[str]:
    return rest[1:] if rest[:1] == ["--"] else rest


def _submit_slurm(args) -> int:
    from cluster.slurm import SlurmJob, submit

    job = SlurmJob(_janus_command(args.janus_args), nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                   cpus_per_task=args.cpus_per_task, partition=args.partition, time=args.time,
                   job_name=args.job_name, signal_before_s=args.signal_before, log_dir=args.log_dir, mem=args.mem,
                   extra_sbatch=tuple(args.sbatch))
    result = submit(job, dry_run=args.dry_run)
    print(result if args.dry_run else f"submitted batch job {result} (log: {args.log_dir}/{args.job_name}-{result}.out)")
    return 0


def _submit_k8s(args) -> int:
    from cluster.k8s import K8sJob, submit

    job = K8sJob(_janus_command(args.janus_args), image=args.image, name=args.name, namespace=args.namespace,
                 workers=args.workers, gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                 memory_per_worker=args.memory_per_worker, data_pvc=args.data_pvc,
                 checkpoint_pvc=args.checkpoint_pvc, backoff_limit=args.backoff_limit)
    print(submit(job, out=args.out))
    return 0


def _study(args) -> int:
    from finetune.study import NMT_ARMS, OPTIONAL_ARMS, StudyConfig, run_study

    tasks = ("nmt", "summarization", "dialogue") if args.task == "all" else tuple(args.task.split(","))
    unknown_tasks = set(tasks) - {"nmt", "summarization", "dialogue"}
    if unknown_tasks:
        raise ValueError(f"study task {args.task!r}: unknown {sorted(unknown_tasks)}; give all, or a comma-separated "
                         "subset of nmt,summarization,dialogue")
    arms = tuple(args.arms.split(",")) if args.arms else NMT_ARMS
    unknown = set(arms) - set(NMT_ARMS + OPTIONAL_ARMS)
    if unknown:
        raise ValueError(f"--arms: unknown {sorted(unknown)}; choose from {','.join(NMT_ARMS + OPTIONAL_ARMS)}")
    seeds = tuple(int(x) for x in args.seeds.split(","))
    run_study(StudyConfig(budget=args.budget, janus_ratio=args.janus_ratio, arm_minutes=args.arm_minutes,
                          eval_every=args.eval_every,
                          patience=args.patience, dev_examples=args.dev_examples, preset=args.preset,
                          dropout=args.dropout, token_budget=args.token_budget, workers=args.workers, seeds=seeds,
                          lr=args.lr,
                          warmup_steps=args.warmup_steps, vocab_size=args.vocab, train_pairs=args.train_pairs,
                          test_examples=args.test_examples, tasks=tasks, arms=arms), args.out, args.runs)
    return 0


def _bench_train(args) -> int:
    from pretrain.bench_train import bench_train

    bench_train(args.preset, args.out, steps=args.steps, token_budget=args.token_budget)
    return 0


def _bench_decode(args) -> int:
    import json
    from pathlib import Path

    from finetune.evaluate import evaluate
    from finetune.metrics import PRIMARY
    from janus.files import atomic_write
    from janus.generate import Mode

    model, tok, task, pairs, settings = _decoding_job(args)
    if args.mode == "all" and any(m.kind == "draft" for m in settings):  # the relaxed mode, labelled, beside it
        settings.append(Mode("draft_top3", "draft", accept_top=3))
    results = evaluate(model, tok, pairs, task, settings, latency_examples=args.latency_examples,
                       repeats=args.repeats)
    metric = PRIMARY[task]
    beam = next((n for n in results if n.startswith("ar_beam")), None)
    head = f"{'mode':<12}{metric:>8}{'b1 ms':>9}{'(p25-p75)':>16}{'ex/s b32':>10}{'vs beam':>9}{'vs greedy':>11}" \
           f"{'tok/round':>11}"
    print(head + "\n" + "-" * len(head))
    for name, r in results.items():
        spread = f"({r['latency_ms_b1_p25']:.1f}-{r['latency_ms_b1_p75']:.1f})"
        print(f"{name:<12}{r[metric]:>8.2f}{r['latency_ms_b1']:>9.1f}{spread:>16}{r['examples_per_s_b32']:>10.1f}"
              f"{(str(round(r[f'speedup_vs_{beam}'], 2)) + 'x') if beam else '':>9}"
              f"{(str(round(r['speedup_vs_ar_greedy'], 2)) + 'x') if 'speedup_vs_ar_greedy' in r else '':>11}"
              f"{r['tokens_per_round'] if 'tokens_per_round' in r else '':>11.4}")
    first = next(iter(results.values()))
    print(f"{len(pairs)} {args.split} examples scored; latency over {first['timed_examples']} x {args.repeats} "
          f"interleaved repeats; load average {first['load_average_start']:.2f} -> {first['load_average_end']:.2f}")
    if "draft" in results:
        print(f"draft output identical to AR greedy on {100 * results['draft']['identical_to_ar_greedy']:.1f}% of examples")
    if "draft_top3" in results:
        print("draft_top3 also accepts a draft token among the AR's 3 most likely: NOT AR greedy's output")
    report = {"model": str(args.model), "data": str(args.data), "split": args.split, "examples": len(pairs),
              "results": {n: {k: v for k, v in r.items() if k != "hypotheses"} for n, r in results.items()}}
    atomic_write(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


def _bench_loader(args) -> int:
    from pretrain.bench_loader import bench_loader

    bench_loader(args.out, url=args.url)
    return 0


def _check(args) -> int:
    from cluster.check import run_check

    return run_check(args.out, quick=args.quick)


def _demo(args) -> int:
    from cluster.pipeline import DemoConfig, run_demo

    run_demo(DemoConfig(run_dir=args.run_dir, minutes=args.minutes, preset=args.preset, vocab_size=args.vocab_size,
                        pretrain_share=args.pretrain_share, ar_share=args.ar_share, kl_scale=args.kl_scale,
                        ar_stage_objective=args.ar_stage_objective,
                        max_pretrain_steps=args.max_pretrain_steps,
                        max_finetune_steps=args.max_finetune_steps, eval_examples=args.eval_examples,
                        draft_examples=args.draft_examples, latency_examples=args.latency_examples,
                        pretrain_documents=args.pretrain_documents))
    return 0


def _decoding_arguments(parser: argparse.ArgumentParser, iterations: str, latency_examples: int) -> None:
    """What `janus evaluate` and `janus bench decode` both take (read by `_decoding_job`)."""
    parser.add_argument("--model", required=True, help="a run, checkpoint or export")
    parser.add_argument("--data", required=True, help="a directory with {split}.src and {split}.tgt")
    parser.add_argument("--split", default="test")
    parser.add_argument("--task", default=None, help="default: the task the model was fine-tuned on, else nmt")
    parser.add_argument("--mode", default="all", choices=("ar", "nar", "draft", "all"))
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--iterations", default=iterations, help="mask-predict T values")
    parser.add_argument("--length-beam", type=int, default=3)
    parser.add_argument("--max-examples", type=int, default=0, help="score the first N examples (0: the whole split)")
    parser.add_argument("--latency-examples", type=int, default=latency_examples, help="examples timed at batch 1")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (medians are reported)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus", description="Pretrain, fine-tune and decode JANUS models.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the main job on real data, on this machine")
    from cluster.pipeline import DemoConfig

    defaults = DemoConfig()
    demo.add_argument("--run-dir", default=defaults.run_dir)
    demo.add_argument("--minutes", type=float, default=defaults.minutes,
                      help="the demo's whole wall clock; every stage is sized from it")
    demo.add_argument("--preset", default=defaults.preset)
    demo.add_argument("--vocab-size", type=int, default=defaults.vocab_size, help="of the joint en-de tokenizer")
    demo.add_argument("--pretrain-share", type=float, default=defaults.pretrain_share,
                      help="fraction of the training time spent pretraining (0: fine-tune from scratch)")
    demo.add_argument("--ar-share", type=float, default=defaults.ar_share,
                      help="fraction of the fine-tuning time on the AR stage before JANUS's (0: JANUS only)")
    demo.add_argument("--ar-stage-objective", choices=("ar", "ar-cmlm"), default=defaults.ar_stage_objective,
                      help="the AR stage's objective: ar-cmlm (AR and CMLM losses) or ar (the AR loss alone)")
    demo.add_argument("--kl-scale", type=float, default=defaults.kl_scale,
                      help="the JANUS stage's KL weights times this (1: as released)")
    demo.add_argument("--max-pretrain-steps", type=int, default=0, help="a step cap besides the clock")
    demo.add_argument("--max-finetune-steps", type=int, default=0, help="a step cap besides the clock")
    demo.add_argument("--eval-examples", type=int, default=0, help="test pairs scored (0: the whole split)")
    demo.add_argument("--draft-examples", type=int, default=defaults.draft_examples)
    demo.add_argument("--latency-examples", type=int, default=defaults.latency_examples)
    demo.add_argument("--pretrain-documents", type=int, default=defaults.pretrain_documents)
    demo.set_defaults(func=_demo)

    check = sub.add_parser("check", help="prove this install on this machine: one row per capability, pass/fail")
    check.add_argument("--quick", action="store_true", help="fewer steps, no MFU bench (about a minute less)")
    check.add_argument("--out", default="runs/check", help="directory for check.json and check.md")
    check.set_defaults(func=_check)

    data = sub.add_parser("data", help="fetch real corpora").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download, verify, extract and split a dataset")
    fetch.add_argument("name", help="dataset recipe: nmt, summarization, dialogue, qg, pretrain-en")
    fetch.add_argument("--out", default=None, help="output directory (default: the cache)")
    fetch.add_argument("--pair", default="en-de", help="language pair SRC-TGT for nmt")
    fetch.set_defaults(func=_data_fetch)

    tokz = data.add_parser("tokenizer", help="train a sentencepiece tokenizer (deterministic)")
    tokz.add_argument("inputs", nargs="+", help="text files, directories, JSONL, or task directories")
    tokz.add_argument("--out", required=True, help="the .model file to write")
    tokz.add_argument("--vocab-size", type=int, default=8000)
    tokz.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    tokz.add_argument("--character-coverage", type=float, default=0.9995,
                      help="share of characters that get their own piece (1.0 for small, clean corpora)")
    tokz.add_argument("--sample", type=int, default=2_000_000, help="train on at most this many texts")
    tokz.set_defaults(func=_data_tokenizer)
    shard = data.add_parser("shard", help="tokenize into webdataset shards with an index")
    shard.add_argument("inputs", nargs="+", help="a task directory / src-tgt JSONL, or with --blocks documents")
    shard.add_argument("--tokenizer", required=True)
    shard.add_argument("--out", required=True)
    shard.add_argument("--split", default="train")
    shard.add_argument("--blocks", action="store_true", help="pack documents into seq_len blocks (pretraining)")
    shard.add_argument("--seq-len", type=int, default=256)
    shard.add_argument("--per-shard", type=int, default=20000, help="pairs (or with --blocks, documents) per shard")
    shard.add_argument("--workers", type=int, default=None)
    shard.set_defaults(func=_data_shard)

    pre = sub.add_parser("pretrain", help="pretrain on shards with Ray + DeepSpeed; rerun to resume")
    pre.add_argument("--config", default="tiny", help="a TOML file or a built-in config name (tiny, small)")
    pre.add_argument("--address", default=None, help="an existing Ray cluster (default: RAY_ADDRESS or local)")
    pre.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_steps=50 run_dir=runs/x")
    pre.set_defaults(func=_pretrain)

    ft = sub.add_parser("finetune", help="fine-tune on a task (GLGE layout) with Ray + DeepSpeed; rerun to resume")
    ft.add_argument("--task", required=True, choices=("nmt", "summarization", "question_generation", "dialogue"))
    ft.add_argument("--data", required=True, help="a directory with {train,dev,test}.{src,tgt}")
    ft.add_argument("--init", required=True, help="a pretraining run / checkpoint / export, or 'scratch'")
    ft.add_argument("--config", default="tiny", help="a TOML file or a built-in name (tiny, small)")
    ft.add_argument("--address", default=None, help="an existing Ray cluster (default: RAY_ADDRESS or local)")
    ft.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_steps=500 run_dir=runs/ft")
    ft.set_defaults(func=_finetune)

    ev = sub.add_parser("evaluate", help="decode AR / NAR / draft from one model; quality, latency, frontier")
    _decoding_arguments(ev, iterations="1,2,4,10", latency_examples=20)
    ev.add_argument("--out", required=True, help="directory for metrics.json, results.md, frontier.png, *.hyp")
    ev.set_defaults(func=_evaluate)

    ex = sub.add_parser("export", help="consolidate a checkpoint into safetensors + config + tokenizer + card")
    ex.add_argument("source", help="a run directory, a checkpoint step directory (or with --verify an export)")
    ex.add_argument("--out", default=None)
    ex.add_argument("--verify", action="store_true", help="check an export's files against SHA256SUMS")
    ex.add_argument("--force", action="store_true", help="replace a previous export at --out (nothing else)")
    ex.set_defaults(func=_export)

    st = sub.add_parser("study", help="AR vs CMLM vs JANUS vs BANG at one budget; results.md/json/png")
    st.add_argument("task", help="all, or a comma-separated subset of nmt,summarization,dialogue")
    st.add_argument("--budget", type=int, required=True, help="most optimizer steps of a baseline arm")
    st.add_argument("--janus-ratio", type=float, default=1.0,
                    help="JANUS arms train up to budget x this (the release's 2:1 updates: 2)")
    st.add_argument("--arm-minutes", type=float, default=0.0,
                    help="a baseline arm also stops after this many minutes of steps (JANUS arms: x --janus-ratio)")
    st.add_argument("--eval-every", type=int, default=0, help="dev evaluation every N steps (0: budget/10)")
    st.add_argument("--patience", type=int, default=0, help="stop an arm after N evaluations without a new best dev")
    st.add_argument("--dev-examples", type=int, default=200)
    st.add_argument("--seeds", default="0", help="comma-separated seeds, each arm runs once per seed")
    st.add_argument("--preset", default="small")
    st.add_argument("--dropout", type=float, default=-1.0, help="replaces the preset's dropout (the release: 0.3)")
    st.add_argument("--token-budget", type=int, default=1024, help="target tokens per worker per step")
    st.add_argument("--workers", type=int, default=2, help="Ray workers per arm (one per GPU)")
    st.add_argument("--train-pairs", type=int, default=0, help="a fixed subset of the NMT training pairs (0: all)")
    st.add_argument("--arms", default="", help="comma-separated subset of ar,ar-rdrop,cmlm,janus,bang,janus-permutation "
                    "(default: all six), or bang-cross-stream")
    st.add_argument("--test-examples", type=int, default=0, help="0: the whole test split")
    st.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of every arm")
    st.add_argument("--warmup-steps", type=int, default=0, help="0: budget/10")
    st.add_argument("--vocab", type=int, default=8000, help="tokenizer vocabulary (2000 suits the tiny preset)")
    st.add_argument("--out", default="runs/study",
                    help="results.{md,json,png} and hyps/ (commit them: a rerun continues from results.json)")
    st.add_argument("--runs", default=None, help="the arms' run directories (not committed; default OUT/runs)")
    st.set_defaults(func=_study)

    submit = sub.add_parser("submit", help="run a janus command on a Slurm or Kubernetes (KubeRay) cluster")
    where = submit.add_subparsers(dest="submit_command", required=True)
    sl = where.add_parser("slurm", help="an sbatch job: Ray over the nodes, the command, requeue on preemption")
    sl.add_argument("--nodes", type=int, default=1)
    sl.add_argument("--gpus-per-node", type=int, default=0)
    sl.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per node for Ray (one task per node)")
    sl.add_argument("--partition", default="")
    sl.add_argument("--time", default="04:00:00", help="time limit: minutes, HH:MM:SS or D-HH:MM:SS")
    sl.add_argument("--mem", default="", help="memory per node, e.g. 64G (default: the partition's)")
    sl.add_argument("--job-name", default="janus")
    sl.add_argument("--signal-before", type=int, default=300, help="seconds before the limit to checkpoint")
    sl.add_argument("--log-dir", default="runs/slurm")
    sl.add_argument("--sbatch", action="append", default=[], help="an extra sbatch option, e.g. --account=ml")
    sl.add_argument("--dry-run", action="store_true", help="print the sbatch script instead of submitting it")
    sl.add_argument("janus_args", nargs=argparse.REMAINDER, help="-- janus pretrain|finetune ...")
    sl.set_defaults(func=_submit_slurm)
    k8 = where.add_parser("k8s", help="a KubeRay RayJob: CPU head, GPU workers, volumes, the same command")
    k8.add_argument("--image", default="", help="a container image with this project installed")
    k8.add_argument("--name", default="janus")
    k8.add_argument("--namespace", default="default")
    k8.add_argument("--workers", type=int, default=1, help="GPU worker pods")
    k8.add_argument("--gpus-per-worker", type=int, default=1)
    k8.add_argument("--cpus-per-worker", type=int, default=8)
    k8.add_argument("--memory-per-worker", default="64Gi")
    k8.add_argument("--data-pvc", default="", help="a PersistentVolumeClaim mounted at /data")
    k8.add_argument("--checkpoint-pvc", default="", help="a PersistentVolumeClaim mounted at /checkpoints")
    k8.add_argument("--backoff-limit", type=int, default=3, help="job retries (each resumes from /checkpoints)")
    k8.add_argument("--out", default=None, help="write the manifest here instead of applying it with kubectl")
    k8.add_argument("janus_args", nargs=argparse.REMAINDER, help="-- janus pretrain|finetune ...")
    k8.set_defaults(func=_submit_k8s)

    bench = sub.add_parser("bench", help="benchmarks that print a table and write JSON")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    model = bench_sub.add_parser("model", help="forward+backward tokens/s and MFU per objective")
    model.add_argument("--preset", default="small")
    model.add_argument("--out", required=True, help="JSON file to write")
    model.add_argument("--target-tokens", type=int, default=4096)
    model.add_argument("--threads", type=int, default=2)
    model.set_defaults(func=_bench_model)
    train = bench_sub.add_parser("train", help="the whole engine: AR vs JANUS, 1 vs 2 workers, vs HF BART")
    train.add_argument("--preset", default="small")
    train.add_argument("--out", required=True, help="JSON file to write")
    train.add_argument("--steps", type=int, default=12, help="steps per run (the first 4 are warm-up)")
    train.add_argument("--token-budget", type=int, default=2048, help="target tokens per worker per step")
    train.set_defaults(func=_bench_train)
    dec = bench_sub.add_parser("decode", help="every decoding mode of one model: quality, latency b1 with its "
                               "spread, throughput b32, speed-ups in the same run")
    _decoding_arguments(dec, iterations="1,4,10", latency_examples=50)
    dec.add_argument("--out", required=True, help="JSON file to write")
    dec.set_defaults(func=_bench_decode)
    loader = bench_sub.add_parser("loader", help="loader tokens/s, local and remote, 1 and 2 workers, vs a step")
    loader.add_argument("--out", required=True, help="JSON file to write")
    loader.add_argument("--url", default=None, help="a shard base URL to read (default: the local shards served "
                        "over HTTP on 127.0.0.1)")
    loader.set_defaults(func=_bench_loader)
    return parser


def main(argv: list[str] | None = None) -> int:
    _reexec_with_allocator_env(argv)
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|tp_group is None|CUDA_DEVICE_MAX).*")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come before or between the options
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.parse_args(argv)  # argparse's own one-line error, exit 2
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:  # SubmitError, ConfigKeyError, ExportError too
        print(f"janus {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, read-only, permission: the path and the cause
        print(f"janus {args.command}: error: {describe(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # FetchError, FileFault and friends: one line, no traceback
        print(f"janus {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
