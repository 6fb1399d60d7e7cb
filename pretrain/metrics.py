"""What a run records on rank 0: metrics.jsonl, TensorBoard scalars, a progress bar or line, loss.png."""

from __future__ import annotations

import json
import time
from pathlib import Path


class Progress:
    """Rank 0's progress: a bar (Ray's tqdm, drawn by the driver) on a terminal, else a line every ~2%
    of the run (logs, Slurm output) with the step, loss, tokens/s and ETA."""

    def __init__(self, total: int, done: int, bar: bool):
        self.total, self.first, self.start = total, done, time.perf_counter()
        self.every = max(1, total // 50)
        self.bar = None
        if bar:
            from ray.experimental.tqdm_ray import tqdm

            self.bar = tqdm(total=total, desc="train", unit="step")
            self.bar.update(done)

    def update(self, step: int, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)
            self.bar.update(1)
        elif step % self.every == 0 or step == self.total:
            rate = (time.perf_counter() - self.start) / max(1, step - self.first)
            eta = int(rate * (self.total - step))
            print(f"step {step}/{self.total} {text} ETA {eta // 60}m{eta % 60:02d}s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsLog:
    """metrics.jsonl (cut back to the step a run resumes from, so a resumed run's rows follow on without
    the steps it repeats), TensorBoard under tensorboard/, and the progress display."""

    def __init__(self, run_dir: Path, step: int, total: int, bar: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / "metrics.jsonl"
        kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step] \
            if self.path.exists() else []
        self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=step + 1)
        self.progress = Progress(total, step, bar)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and value is not None:
                self.writer.add_scalar(f"train/{key}", value, record["step"])
        self.progress.update(record["step"], f"loss {record['loss']:.3f} {record['tokens_per_s']:.0f} tok/s "
                                             f"MFU {record['mfu']:.0%}")

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.progress.close()
        self.writer.close()


NOT_LOSSES = {"step", "lr", "grad_norm", "tokens_per_s", "mfu", "gflops", "peak_gflop_s", "tokens",
              "skipped_nonfinite", "data_skipped", "pairs_dropped_too_long", "pairs_truncated", "loss_scale",
              "elapsed_s"}


def plot_metrics(run_dir: Path) -> Path | None:
    """loss.png: the total loss and each term against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for key in [k for k in rows[-1] if k not in NOT_LOSSES]:
        ax.plot(steps, [r.get(key) for r in rows], label=key, linewidth=2 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{Path(run_dir).name}: training loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    out = Path(run_dir) / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
