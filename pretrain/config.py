"""The typed pretraining config: a TOML file plus `key=value` overrides; unknown keys are refused with
the nearest valid name."""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainConfig:
    run_dir: str = "runs/pretrain"
    shards: str = ""  # a directory written by `janus data shard`, or a base URL holding one (pretrain/storage.py)
    shard_reader: str = ""  # a command that writes {url} to stdout, for object stores (default: aws/gcloud)
    shard_timeout_s: float = 30.0  # a remote read that stalls this long fails the attempt
    shard_retries: int = 3  # attempts after the first, with exponential backoff, before a shard is skipped
    shard_backoff_s: float = 1.0
    shard_wait_s: float = 600.0  # how long a stream waits when no shard of an epoch could be read
    tokenizer: str = ""  # the sentencepiece .model the shards were written with
    data_kind: str = "blocks"  # blocks (pretraining) | pairs (tasks)
    model_preset: str = "tiny"
    objective: str = "janus-pretrain"  # janus-pretrain | janus | ar | cmlm
    seed: int = 0
    max_steps: int = 100
    # > 0: the run also ends (checkpointed, and evaluated when fine-tuning) once its step loop has run this
    # long, all sessions together, and a polynomial lr schedule decays by this clock; a run that stops on
    # time is not step-for-step reproducible, one that stops at max_steps is
    max_minutes: float = 0.0
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    num_workers: int = 2  # Ray workers (= torch ranks)
    tensor_parallel: int = 1
    zero_stage: int = 2
    grad_accum: int = 1
    grad_clip: float = 1.0
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_schedule: str = "inverse_sqrt"  # after warmup: inverse_sqrt | polynomial (to lr_end at max_steps)
    lr_end: float = 0.0
    lr_power: float = 1.0  # polynomial decay power (1 = linear)
    weight_decay: float = 0.01
    token_budget: int = 2048
    max_source_tokens: int = 128  # longer sources are truncated or dropped (long_source)
    max_target_tokens: int = 128  # longer targets are dropped (and counted)
    masking: str = "release"  # target masking of pairs: release (the authors' code) | span (exactly 70%) | uniform
    long_source: str = "auto"  # truncate | drop | auto (truncate for summarization-like tasks, drop for nmt)
    window: int = 2048
    loader_workers: int = 0
    precision: str = "bf16"  # on a GPU: bf16 | fp16 (dynamic loss scaling) | fp32; on CPU always fp32
    max_failures: int = 0  # Ray restarts of a failed worker group
    max_nonfinite: int = 5  # this many non-finite losses in a row stop the run
    lock_wait_s: float = 60.0  # how long a start waits for another live run of this run_dir to exit
    init: str = ""  # start from these weights (an export or a checkpoint step directory) when the run has none
    dropout: float = -1.0  # >= 0 replaces the preset's dropout (the release trains NMT at 0.3)
    # multiplies the objective's three SKL weights (1: as released). The consistency terms pull P_AR towards
    # the NAR and AUX distributions, which pays after long training but costs AR in a short one (the CPU
    # demo uses 0.1: README, recipe table)
    kl_scale: float = 1.0
    peak_gflops: float = 0.0  # per-rank matmul peak for MFU; 0 = measure at start
    cpu_threads: int = 0  # torch threads per rank on a CPU; 0 = this worker's cores over the node's ranks
    # fault injection, for tests of the failure paths
    debug_nonfinite_batches: str = ""  # "3,7": make the loss of these batches (1-based, this process) NaN
    debug_sigkill_at_step: int = 0  # the last rank SIGKILLs itself after this step, once per run directory

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def storage(self):
        from pretrain.storage import StorageConfig

        return StorageConfig(reader=self.shard_reader, timeout_s=self.shard_timeout_s, retries=self.shard_retries,
                             backoff_s=self.shard_backoff_s)


    def validate(self) -> "TrainConfig":
        """Every key's range and choice, checked on the driver before anything starts or is written."""
        from janus.config import PRESETS
        from janus.noising import MASKINGS
        from janus.objective import OBJECTIVES

        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise ConfigKeyError(f"config key {key}={getattr(self, key)!r}: {what}")

        for key in ("max_steps", "checkpoint_every", "grad_accum", "token_budget", "max_source_tokens",
                    "max_target_tokens", "window", "max_nonfinite", "tensor_parallel"):
            need(getattr(self, key) >= 1, key, "must be a positive integer")
        need(self.num_workers >= 1, "num_workers", "must be >= 1 (one Ray worker per rank; there is no "
                                                   "in-process mode)")
        for key in ("keep_checkpoints", "warmup_steps", "loader_workers", "max_failures", "seed",
                    "debug_sigkill_at_step", "cpu_threads"):
            need(getattr(self, key) >= 0, key, "must be >= 0")
        for key in ("max_minutes", "grad_clip", "weight_decay", "lr_end", "lock_wait_s", "peak_gflops", "shard_retries",
                    "shard_backoff_s", "shard_wait_s"):
            need(getattr(self, key) >= 0, key, "must be >= 0")
        need(self.lr > 0, "lr", "must be > 0")
        need(self.dropout < 1.0, "dropout", "must be below 1 (or < 0 for the preset's)")
        need(self.kl_scale >= 0, "kl_scale", "must be >= 0 (1: the objective's weights as released)")
        need(self.shard_timeout_s > 0, "shard_timeout_s", "must be > 0")
        need(not self.shard_reader or "{url}" in self.shard_reader, "shard_reader",
             "must contain {url}, e.g. 'aws s3 cp {url} -'")
        need(self.lr_power > 0, "lr_power", "must be > 0")
        need(self.objective in OBJECTIVES, "objective", f"choose one of {', '.join(sorted(OBJECTIVES))}")
        need(self.model_preset in PRESETS, "model_preset", f"choose one of {', '.join(PRESETS)}")
        need(self.precision in ("bf16", "fp16", "fp32"), "precision", "choose bf16, fp16 or fp32")
        need(self.data_kind in ("blocks", "pairs"), "data_kind", "choose blocks (pretraining) or pairs (tasks)")
        need(self.zero_stage in (0, 1, 2, 3), "zero_stage", "choose 0, 1, 2 or 3")
        need(self.lr_schedule in ("inverse_sqrt", "polynomial"), "lr_schedule", "choose inverse_sqrt or polynomial")
        need(self.long_source in ("auto", "truncate", "drop"), "long_source", "choose truncate, drop or auto")
        need(self.masking in MASKINGS, "masking", f"choose one of {', '.join(MASKINGS)}")
        need(self.num_workers % self.tensor_parallel == 0, "tensor_parallel",
             f"must divide num_workers={self.num_workers} (data-parallel size = workers / TP)")
        need(self.token_budget >= max(self.max_source_tokens, self.max_target_tokens), "token_budget",
             f"must be >= max_source_tokens={self.max_source_tokens} and max_target_tokens="
             f"{self.max_target_tokens}, or a single longest pair would not fit a batch")
        positions = PRESETS[self.model_preset].get("max_positions", 256)
        for key in ("max_source_tokens", "max_target_tokens"):
            need(getattr(self, key) <= positions, key,
                 f"the {self.model_preset} preset has max_positions={positions}: lower it to at most that")
        return self


class ConfigKeyError(ValueError):
    pass


# keys that were renamed: an old config names the new ones in its error
RENAMED = {"max_tokens": "max_source_tokens and max_target_tokens"}


def _coerce(name: str, value, kind):
    try:
        if kind is bool or kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return {"int": int, "float": float, "str": str}.get(kind if isinstance(kind, str) else kind.__name__, str)(value)
    except (TypeError, ValueError):
        raise ConfigKeyError(f"config key {name!r} wants a {kind if isinstance(kind, str) else kind.__name__}, "
                             f"got {value!r}") from None


def read_config(path: str | None, overrides: list[str] = (), config_dir: Path = CONFIG_DIR) -> dict:
    """The raw values of a TOML config (a path, or a built-in name in `config_dir`: pretrain/configs/, or
    finetune/configs/ for fine-tuning) with the command line's key=value overrides applied."""
    values: dict = {}
    if path:
        file = Path(path)
        if not file.exists() and (config_dir / f"{path}.toml").exists():
            file = config_dir / f"{path}.toml"
        if not file.is_file():
            raise FileNotFoundError(f"config {path} not found (built-in configs: "
                                    f"{sorted(p.stem for p in config_dir.glob('*.toml'))})")
        try:
            values.update(tomllib.loads(file.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as err:
            raise ConfigKeyError(f"{file}: not valid TOML ({err})") from None
        except UnicodeDecodeError as err:
            raise ConfigKeyError(f"{file}: not UTF-8 text (byte {err.start})") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigKeyError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        values[key.strip()] = value
    return values


def build(kind: type, values: dict, others: tuple[type, ...] = ()):
    """`kind` from the values that name its fields; a key that is neither its nor one of `others`' (the
    configs read from the same file) is refused with the nearest valid name."""
    fields = {f.name: f.type for f in dataclasses.fields(kind)}
    known = set(fields).union(*({f.name for f in dataclasses.fields(o)} for o in others))
    for key in values:
        if key in RENAMED:
            raise ConfigKeyError(f"config key {key!r} was split into {RENAMED[key]}")
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigKeyError(f"unknown config key {key!r}{hint}")
    return kind(**{k: _coerce(k, v, fields[k]) for k, v in values.items() if k in fields})


def load_config(path: str | None, overrides: list[str] = (), config_dir: Path = CONFIG_DIR) -> TrainConfig:
    """A validated TrainConfig from a TOML config and key=value overrides (see read_config)."""
    return build(TrainConfig, read_config(path, overrides, config_dir)).validate()


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
