"""`janus check`: proves an install on this machine's hardware in a few minutes, before a cluster
allocation is spent. Each row runs one capability end to end on a real (committed) en-de sample and
reports pass / fail with its measured figure, or n/a with the reason; exit 0 only if every applicable
row passes. Writes DIR/check.json and DIR/check.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

SAMPLE = Path(__file__).parent / "data" / "libreoffice-help-en-de.tsv"


@dataclass
class Row:
    name: str
    status: str  # pass | fail | n/a
    figure: str  # the measured figure, the failure, or why the row does not apply
    seconds: float = 0.0


class NotApplicable(Exception):
    pass


@dataclass
class Machine:
    gpus: int
    device: str
    bf16: bool
    cpus: int

    @classmethod
    def here(cls) -> "Machine":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        name = torch.cuda.get_device_name(0) if gpus else platform.processor() or platform.machine()
        return cls(gpus=gpus, device=f"{gpus} x {name}" if gpus else f"CPU ({name})",
                   bf16=bool(gpus) and torch.cuda.is_bf16_supported(), cpus=os.cpu_count() or 1)

    @property
    def ranks(self) -> int:
        """Ranks the training rows use: every GPU, or two gloo processes on a CPU."""
        return self.gpus or 2


class Check:
    def __init__(self, work: Path, quick: bool):
        self.work, self.quick, self.rows = work, quick, []
        self.machine = Machine.here()

    def row(self, name: str, fn) -> None:
        print(f"[check] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            status, figure = "pass", fn()
        except NotApplicable as why:
            status, figure = "n/a", str(why)
        except Exception as err:  # a check reports what failed and goes on to the next row
            status = "fail"
            figure = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            with open(self.work / "failures.log", "a") as log:
                log.write(f"== {name}\n{traceback.format_exc()}\n")
        self.rows.append(Row(name, status, figure, time.perf_counter() - start))
        print(f"[check] {name}: {status} ({figure})", flush=True)

    # -- the rows ----------------------------------------------------------------------------------

    def device(self) -> str:
        m = self.machine
        precisions = "bf16, fp16 (dynamic loss scaling), fp32" if m.gpus and m.bf16 else \
            "fp16 (dynamic loss scaling), fp32" if m.gpus else "fp32 (a CPU trains in fp32)"
        return f"{m.device}; {m.cpus} CPUs; torch {torch.__version__}; {precisions}"

    def data(self) -> str:
        from janus.tokenizer import train_tokenizer
        from pretrain.shards import write_pair_shards

        pairs = [tuple(line.split("\t")) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
        self.train, self.test = pairs[:1000], pairs[1000:]
        self.tokenizer = train_tokenizer([s for p in self.train for s in p], self.work / "tok.model", vocab_size=600,
                                         character_coverage=1.0).path
        index = write_pair_shards(self.train, self.tokenizer, self.work / "shards", pairs_per_shard=125, workers=1)
        return f"{len(pairs)} real pairs ({SAMPLE.name}), a 600-piece tokenizer, {len(index['shards'])} shards"

    def _train(self, name: str, steps: int, **keys) -> tuple[Path, list[dict]]:
        from pretrain.config import TrainConfig
        from pretrain.launch import run_training

        cfg = TrainConfig(run_dir=str(self.work / name), shards=str(self.work / "shards"), tokenizer=str(self.tokenizer),
                          data_kind="pairs", model_preset="tiny", objective="janus", max_steps=steps,
                          checkpoint_every=max(1, steps // 2), num_workers=self.machine.ranks, token_budget=1024,
                          window=512, lr=3e-3, warmup_steps=3, precision="fp32", lock_wait_s=5)
        run_dir = run_training(replace(cfg, **keys))
        return run_dir, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    @staticmethod
    def _falls(rows: list[dict]) -> str:
        losses = [r["loss"] for r in rows]
        first, last = statistics.mean(losses[:3]), statistics.mean(losses[-3:])
        if not last < 0.95 * first:
            raise AssertionError(f"the loss did not fall: {first:.3f} -> {last:.3f} over {len(losses)} steps")
        speed = statistics.median(r["tokens_per_s"] for r in rows)
        return f"loss {first:.3f} -> {last:.3f} in {len(losses)} steps, {speed:,.0f} tok/s"

    def zero2(self) -> str:
        self.steps = 6 if self.quick else 10
        self.run_dir, self.reference = self._train("zero2", self.steps, zero_stage=2)
        return f"{self.machine.ranks} ranks x ZeRO-2: " + self._falls(self.reference)

    def resume(self) -> str:
        from pretrain import checkpoint

        if not hasattr(self, "run_dir"):
            raise NotApplicable("the ZeRO-2 run failed")
        half = self.steps // 2
        again = self.work / "resumed"
        shutil.copytree(self.run_dir, again, ignore=shutil.ignore_patterns("ray", "run.lock"))
        for step in checkpoint.complete_steps(again / "checkpoints", verify=False):
            if step > half:
                shutil.rmtree(again / "checkpoints" / checkpoint.tag_for(step))
        kept = [line for line in (again / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= half]
        (again / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
        _, rows = self._train("resumed", self.steps, zero_stage=2)
        diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(self.reference[half:], rows[half:]))
        # CPU kernels are deterministic; cuBLAS/cuDNN reductions may reorder sums across runs
        allowed = 1e-4 if self.machine.gpus else 0.0
        if [r["step"] for r in rows] != list(range(1, self.steps + 1)) or diff > allowed:
            raise AssertionError(f"resumed at step {half}: max |loss difference| {diff:.2e} > {allowed:g}")
        return f"from the checkpoint at step {half}: steps {half + 1}-{self.steps} max |loss difference| {diff:.1e}"

    def zero3(self) -> str:
        if self.machine.ranks < 2:
            raise NotApplicable("one device: ZeRO-3 shards over >= 2 data-parallel ranks")
        _, rows = self._train("zero3", 6, zero_stage=3, num_workers=2)
        return "2 ranks x ZeRO-3: " + self._falls(rows)

    def tensor_parallel(self) -> str:
        if self.machine.ranks < 2:
            raise NotApplicable("one device: TP=2 needs two")
        return tp2_equals_tp1(self.work, self.tokenizer, self.train[:8], "nccl" if self.machine.gpus else "gloo")

    def precision(self, precision: str) -> str:
        if not self.machine.gpus:
            raise NotApplicable("no GPU: a CPU trains in fp32")
        if precision == "bf16" and not self.machine.bf16:
            raise NotApplicable(f"{self.machine.device} has no bf16")
        _, rows = self._train(precision, 12, zero_stage=2, precision=precision, lr=1e-3)
        figure = f"{precision}: " + self._falls(rows)
        if precision == "fp16":
            scales = [r["loss_scale"] for r in rows if r.get("loss_scale") is not None]
            if not scales:
                raise AssertionError("no loss_scale in metrics.jsonl: dynamic loss scaling did not run")
            figure += f"; loss scale {scales[0]:g} -> {scales[-1]:g}"
        return figure

    def export_and_decode(self) -> str:
        import janus
        from janus.export import verify_export
        from pretrain.exporting import export_checkpoint

        if not hasattr(self, "run_dir"):
            raise NotApplicable("the ZeRO-2 run failed")
        out = export_checkpoint(str(self.run_dir), str(self.work / "export"))
        problems = verify_export(out)
        if problems:
            raise AssertionError(problems[0])
        model = janus.load(out)
        sources = [s for s, _ in self.test[:8]]
        figures = []
        outputs = {}
        for mode in ("ar_beam", "ar_greedy", "nar", "draft"):
            start = time.perf_counter()
            outputs[mode] = model.generate(sources, mode=mode, batch_size=1)
            figures.append(f"{mode} {1000 * (time.perf_counter() - start) / len(sources):.0f} ms")
        if outputs["draft"] != outputs["ar_greedy"]:
            raise AssertionError("draft-and-verify's output differs from AR greedy's")
        return f"export verified, janus.load on {next(model.model.parameters()).device}; per sentence: " \
               + ", ".join(figures) + "; draft == greedy"

    def mfu(self) -> str:
        from janus.config import preset
        from janus.flops import measure_peak_gflops, step_flops
        from janus.model import JanusModel
        from janus.noising import span_mask
        from janus.objective import Batch, compute_loss, objective
        from janus.tokenizer import Tokenizer, pad_batch

        if self.quick:
            raise NotApplicable("--quick")
        device = "cuda" if self.machine.gpus else "cpu"
        tok = Tokenizer(self.tokenizer)
        cfg = preset("small", vocab_size=tok.vocab_size, dropout=0.0)
        model = JanusModel(cfg).to(device)
        pairs = self.train[:24]
        tgt = pad_batch([tok.encode(t) for _, t in pairs])
        batch = Batch(pad_batch([tok.encode(s) for s, _ in pairs]), tgt,
                      span_mask(tgt, cfg.pad_id, torch.Generator().manual_seed(0))).to(device)
        obj = objective("janus")

        def step():
            model.zero_grad(set_to_none=True)
            compute_loss(model, batch, obj)[0].backward()
            if device == "cuda":
                torch.cuda.synchronize()

        step()
        times, peaks = [], []
        for _ in range(3):  # interleaved, best against best: load from other processes hits both alike
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            peaks.append(measure_peak_gflops(reps=1))
        peak = max(peaks)
        mfu = step_flops(cfg, batch, obj) / min(times) / 1e9 / peak
        if not 0 < mfu <= 1:
            raise AssertionError(f"MFU {mfu:.0%} is outside (0, 100%]: the FLOP count or the peak is wrong")
        return f"small JANUS step {mfu:.0%} of the measured fp32 matmul peak ({peak:,.0f} GFLOP/s)"


def tp2_equals_tp1(work: Path, tokenizer: Path, pairs: list, backend: str) -> str:
    """The logits of one set of weights at TP=2 (two processes) and at TP=1 (this one)."""
    import torch.multiprocessing as mp

    from janus.config import preset
    from janus.model import JanusModel
    from janus.tokenizer import Tokenizer, pad_batch

    from janus.parallel import free_port

    tok = Tokenizer(tokenizer)
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tok.vocab_size))
    src = pad_batch([tok.encode(s) for s, _ in pairs])
    tgt = pad_batch([tok.encode(t) for _, t in pairs])
    path = work / "tp-input.pt"
    torch.save({"state": model.full_state_dict(), "vocab": tok.vocab_size, "src": src, "tgt": tgt}, path)
    mp.start_processes(_tp2_logits, args=(2, free_port(), str(path), backend), nprocs=2, start_method="spawn")
    reference = _logits(model.eval(), src, tgt)
    diff = float((torch.load(work / "tp-output.pt") - reference).abs().max())
    if diff > 1e-4:
        raise AssertionError(f"TP=2 logits differ from TP=1 by {diff:.2e}")
    return f"TP=2 ({backend}) vs TP=1 logits: max |difference| {diff:.1e}"


def _logits(model, src, tgt):
    from janus.parallel import gather_from_tp

    with torch.no_grad():
        h = model.decode(model.encode(src), tgt, torch.arange(tgt.shape[1]).expand_as(tgt),
                         torch.ones(*tgt.shape, tgt.shape[1], dtype=torch.bool, device=tgt.device))
        return gather_from_tp(model.logits(h)).float().cpu()


def _tp2_logits(rank: int, world: int, port: int, path: str, backend: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from janus.config import preset
    from janus.model import JanusModel
    from janus.parallel import init_parallel
    from janus.parallelize import parallelize

    device = f"cuda:{rank}" if backend == "nccl" else "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
    init_parallel(tensor_parallel_size=world, backend=backend)
    saved = torch.load(path)
    model = parallelize(JanusModel(preset("tiny", vocab_size=saved["vocab"])))
    model.load_full_state_dict(saved["state"])
    logits = _logits(model.to(device).eval(), saved["src"].to(device), saved["tgt"].to(device))
    if rank == 0:
        torch.save(logits, Path(path).with_name("tp-output.pt"))


def run_check(out: str, quick: bool = False) -> int:
    import ray

    from janus.files import atomic_write

    out_dir = Path(out)
    work = Path(tempfile.mkdtemp(prefix="janus-check-"))
    check = Check(work, quick)
    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=max(2, check.machine.cpus),
             runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"},
                          "worker_process_setup_hook": "pretrain.launch.quiet_ray_loggers"})
    try:
        check.row("device and precision", check.device)
        check.row("data: tokenizer and shards", check.data)
        check.row("pretrain: Ray + DeepSpeed ZeRO-2", check.zero2)
        check.row("checkpoint and resume: identical losses", check.resume)
        check.row("ZeRO-3", check.zero3)
        check.row("tensor parallel: TP=2 equals TP=1", check.tensor_parallel)
        check.row("bf16", lambda: check.precision("bf16"))
        check.row("fp16 with dynamic loss scaling", lambda: check.precision("fp16"))
        check.row("export, janus.load, AR beam / greedy / NAR / draft", check.export_and_decode)
        check.row("bench model: MFU of the measured peak", check.mfu)
    finally:
        ray.shutdown()
    failed = [r for r in check.rows if r.status == "fail"]
    width = max(len(r.name) for r in check.rows)
    table = [f"| {'capability':<{width}} | result | figure |", f"|{'-' * (width + 2)}|--------|--------|",
             *[f"| {r.name:<{width}} | {r.status:<6} | {r.figure} |" for r in check.rows]]
    print("\n" + "\n".join(table))
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": asdict(check.machine),
              "quick": quick, "seconds": time.perf_counter() - started, "load_average": os.getloadavg(),
              "passed": not failed, "rows": [asdict(r) for r in check.rows]}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "check.json", json.dumps(report, indent=2) + "\n")
    atomic_write(out_dir / "check.md", f"# janus check ({report['date']}, {check.machine.device})\n\n"
                 + "\n".join(table) + "\n")
    if failed:
        shutil.copy(work / "failures.log", out_dir / "failures.log")
        print(f"janus check: {len(failed)} of {len(check.rows)} rows failed; tracebacks in {out_dir / 'failures.log'}")
    print(f"{'passed' if not failed else 'FAILED'} in {report['seconds']:.0f} s: {out_dir / 'check.json'}")
    shutil.rmtree(work, ignore_errors=True)  # the check's own scratch directory
    return 1 if failed else 0
