"""Bad input and faults, as a demanding user meets them: each is refused (exit 2) or reported (exit 1)
in one line that names the file or key and what to do, before any work starts; nothing the user had is
deleted or overwritten, and nothing is left half-written."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from cluster.cli import main

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="small and read-only file systems are mounted (root only)")


def janus(capsys, *args) -> tuple[int, str]:
    """`janus ARGS` in this process (for refusals that come before Ray): exit code and stderr."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def janus_process(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_line(err: str) -> str:
    """The error line of a refusal, asserting it is the only `error:` line and no traceback was printed."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def tree(path: Path) -> dict[str, bytes]:
    """Every file's bytes (but run.lock, where each start records its pid)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


@contextmanager
def mounted(where: Path, size: str = "", read_only: bool = False):
    """A small tmpfs (a disk that fills) or a read-only one at `where`."""
    where.mkdir(parents=True, exist_ok=True)
    options = ",".join(o for o in (f"size={size}" if size else "", "ro" if read_only else "") if o)
    subprocess.run(["mount", "-t", "tmpfs", *(["-o", options] if options else []), "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, nmt_dir, tokenizer):
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards

    out = tmp_path_factory.mktemp("refusal-shards") / "shards"
    write_block_shards(list(read_documents([nmt_dir / "train.src"]))[:4000], tokenizer.path, out, seq_len=100,
                       docs_per_shard=1000, workers=1)
    return out


@pytest.fixture(scope="module")
def small_task(tmp_path_factory, nmt_dir):
    """The first pairs of the en-de task, in the GLGE layout."""
    out = tmp_path_factory.mktemp("small-task")
    for split, n in (("train", 2000), ("dev", 100), ("test", 100)):
        for side in ("src", "tgt"):
            lines = (nmt_dir / f"{split}.{side}").read_text().splitlines()[:n]
            (out / f"{split}.{side}").write_text("".join(line + "\n" for line in lines))
    return out


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory, nmt_dir):
    from janus.tokenizer import train_tokenizer
    from pretrain.inputs import read_pairs

    out = tmp_path_factory.mktemp("other-tok") / "other.model"
    return train_tokenizer([s for p in read_pairs(nmt_dir, "train")[:2000] for s in p], out, vocab_size=500,
                           character_coverage=1.0).path


def _pretrain_args(shards, tokenizer, run_dir, *extra):
    return ["pretrain", "--config", "tiny", f"shards={shards}", f"tokenizer={tokenizer}", f"run_dir={run_dir}",
            *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shards, tokenizer):
    """A tiny pretraining run stopped by Ctrl-C after a few steps, then resumed for 2 more: (run directory,
    the interrupted process, the resumed one, the step of the checkpoint the interruption wrote)."""
    from pretrain import checkpoint

    run_dir = tmp_path_factory.mktemp("refusal-run") / "run"
    args = _pretrain_args(shards, tokenizer.path, run_dir, "max_steps=400", "checkpoint_every=200")
    job = subprocess.Popen([sys.executable, "-m", "cluster.cli", *map(str, args)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGINT)  # what a terminal sends the foreground process group on Ctrl-C
    out, err = job.communicate(timeout=240)
    interrupted = subprocess.CompletedProcess(job.args, job.returncode, out, err)
    step = checkpoint.latest_complete(run_dir / "checkpoints")
    assert step is not None, err[-3000:]
    resumed = janus_process(*_pretrain_args(shards, tokenizer.path, run_dir, f"max_steps={step + 2}",
                                            "checkpoint_every=200"))
    return run_dir, interrupted, resumed, step


# 1. export never deletes or overwrites what it did not write

def test_export_refuses_an_existing_directory_and_keeps_it(capsys, run, tmp_path):
    run = run[0]
    mine = tmp_path / "exports"
    (mine / "older-export").mkdir(parents=True)
    (mine / "older-export" / "notes.txt").write_text("mine")
    before = tree(mine)
    code, err = janus(capsys, "export", run, "--out", mine)
    assert code == 2 and f"--out {mine} already exists" in one_line(err)
    assert tree(mine) == before


def test_export_onto_its_own_run_directory_destroys_nothing(capsys, run):
    run = run[0]
    before = tree(run)
    code, err = janus(capsys, "export", run, "--out", run)
    assert code == 2 and "already exists" in one_line(err)
    assert tree(run) == before


def test_export_onto_a_file_is_refused_and_leaves_no_temp(capsys, run, tmp_path):
    run = run[0]
    target = tmp_path / "model.bin"
    target.write_text("a file")
    code, err = janus(capsys, "export", run, "--out", target)
    assert code == 2 and "is an existing file" in one_line(err)
    assert target.read_text() == "a file" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_export_force_replaces_only_a_previous_export(capsys, run, tmp_path):
    run = run[0]
    out = tmp_path / "export"
    assert janus(capsys, "export", run, "--out", out)[0] == 0
    first = (out / "SHA256SUMS").read_text()
    code, err = janus(capsys, "export", run, "--out", out, "--force")
    assert code == 0, err
    assert janus(capsys, "export", "--verify", out)[0] == 0 and (out / "SHA256SUMS").read_text() == first
    (out / "my-eval.md").write_text("results I wrote here")
    code, err = janus(capsys, "export", run, "--out", out, "--force")
    assert code == 2 and "is not a previous export" in one_line(err) and "my-eval.md" in err
    assert (out / "my-eval.md").read_text() == "results I wrote here"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "data.txt").write_text("x")
    code, err = janus(capsys, "export", run, "--out", plain, "--force")
    assert code == 2 and tree(plain) == {"data.txt": b"x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "plain"]  # no temp directory left


@needs_root
def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(capsys, run, tmp_path):
    run = run[0]
    with mounted(tmp_path / "disk", size="64k") as disk:
        code, err = janus(capsys, "export", run, "--out", disk / "export")
        assert code == 1 and "no space left on the device" in one_line(err) and str(disk) in err
        assert list(disk.iterdir()) == []


# 2. identity: tokenizer vs shards, tokenizer vs checkpoint, fine-tune data vs its shards

def test_a_fresh_run_with_a_tokenizer_that_did_not_write_the_shards_is_refused(capsys, shards, other_tokenizer,
                                                                                tmp_path):
    code, err = janus(capsys, *_pretrain_args(shards, other_tokenizer, tmp_path / "new"))
    line = one_line(err)
    assert code == 2 and str(other_tokenizer) in line and str(shards / "index.json") in line
    assert not (tmp_path / "new").exists()


def test_resuming_with_another_tokenizer_is_refused_and_writes_nothing(capsys, run, other_tokenizer, tmp_path,
                                                                       nmt_dir):
    run = run[0]
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards

    other_shards = tmp_path / "other-shards"  # shards that match the other tokenizer: only the run disagrees
    write_block_shards(list(read_documents([nmt_dir / "train.tgt"]))[:800], other_tokenizer, other_shards,
                       seq_len=100, docs_per_shard=200, workers=1)
    before = tree(run)
    code, err = janus(capsys, *_pretrain_args(other_shards, other_tokenizer, run, "max_steps=4"))
    line = one_line(err)
    assert code == 2 and str(other_tokenizer) in line and "/checkpoints/step-" in line and "tokenizer.model" in line
    assert tree(run) == before


def test_finetune_reshards_changed_data_and_refuses_it_in_a_run_that_trained(tmp_path, small_task):
    from finetune.run import load_finetune_config, prepare
    from pretrain.shards import read_index

    data = tmp_path / "task"
    shutil.copytree(small_task, data)
    cfg, _ = prepare("nmt", str(data), "scratch", *load_finetune_config("tiny", [f"run_dir={tmp_path / 'ft'}"]))
    first = read_index(cfg.shards)
    lines = (data / "train.tgt").read_text().splitlines()
    (data / "train.tgt").write_text("\n".join(["Hallo Welt.", *lines[1:]]) + "\n")
    cfg, _ = prepare("nmt", str(data), "scratch", *load_finetune_config("tiny", [f"run_dir={tmp_path / 'ft'}"]))
    second = read_index(cfg.shards)
    assert second["input_sha256"] != first["input_sha256"]  # re-sharded, not re-stamped
    assert not [p for p in (tmp_path / "ft").iterdir() if p.name.endswith(".tmp")]

    proc = janus_process("finetune", "--task", "nmt", "--data", data, "--init", "scratch", "--config", "tiny",
                         f"run_dir={tmp_path / 'ft'}", "max_steps=2", "checkpoint_every=2", "eval_every=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (data / "train.tgt").write_text("\n".join(lines) + "\n")
    proc = janus_process("finetune", "--task", "nmt", "--data", data, "--init", "scratch", "--config", "tiny",
                         f"run_dir={tmp_path / 'ft'}", "max_steps=4")
    line = one_line(proc.stderr)
    assert proc.returncode == 2 and str(data / "train.src") in line and "index.json" in line
    assert read_index(cfg.shards)["input_sha256"] == second["input_sha256"]


def test_data_shard_into_a_directory_of_other_shards_is_refused(capsys, shards, small_task, tokenizer):
    before = tree(shards)
    code, err = janus(capsys, "data", "shard", small_task, "--tokenizer", tokenizer.path, "--out", shards)
    assert code == 2 and "already holds shards written from other input" in one_line(err)
    assert tree(shards) == before


# 3. the whole config is validated on the driver, before Ray or any directory

@pytest.mark.parametrize("override, says", [
    ("objective=januss", "objective='januss': choose one of"),
    ("tensor_parallel=3", "must divide num_workers=2"),
    ("checkpoint_every=0", "checkpoint_every=0: must be a positive integer"),
    ("max_steps=0", "max_steps=0: must be a positive integer"),
    ("max_steps=-1", "max_steps=-1: must be a positive integer"),
    ("token_budget=0", "token_budget=0: must be a positive integer"),
    ("num_workers=0", "num_workers=0: must be >= 1"),
    ("precision=fp8", "precision='fp8': choose bf16, fp16 or fp32"),
    ("model_preset=huge", "model_preset='huge'"),
    ("max_source_tokens=1000", "max_positions=128"),
    ("max_tokens=100", "was split into max_source_tokens and max_target_tokens"),
])
def test_bad_config_values_are_refused_before_anything_starts(capsys, shards, tokenizer, tmp_path, override, says):
    start = time.perf_counter()
    code, err = janus(capsys, *_pretrain_args(shards, tokenizer.path, tmp_path / "run", override))
    assert code == 2 and says in one_line(err)
    assert not (tmp_path / "run").exists() and time.perf_counter() - start < 30


def test_overrides_may_come_before_the_options(capsys, small_task, tmp_path):
    code, err = janus(capsys, "finetune", "max_steps=0", "--task", "nmt", "--data", small_task, "--init", "scratch",
                      f"run_dir={tmp_path / 'ft'}")
    assert code == 2 and "max_steps=0: must be a positive integer" in one_line(err)  # parsed, then validated


# 4. faults: full disk, read-only, Ctrl-C

@needs_root
def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_partial_step(shards, tokenizer, tmp_path):
    with mounted(tmp_path / "disk", size="3M") as disk:
        proc = janus_process(*_pretrain_args(shards, tokenizer.path, disk / "run", "max_steps=4",
                                             "checkpoint_every=2"))
        line = one_line(proc.stderr)
        assert proc.returncode == 1 and "checkpoint step 2" in line and "no space left on the device" in line
        assert "Traceback" not in proc.stderr
        assert list((disk / "run" / "checkpoints").iterdir()) == []  # the partial step is gone, nothing marked
        assert len((disk / "run" / "metrics.jsonl").read_text().splitlines()) == 2


@needs_root
def test_a_read_only_run_directory_is_one_line(capsys, shards, tokenizer, tmp_path):
    with mounted(tmp_path / "ro", read_only=True) as ro:
        code, err = janus(capsys, *_pretrain_args(shards, tokenizer.path, ro / "run"))
        assert code == 1 and "read-only" in one_line(err) and str(ro) in err


@needs_root
def test_data_shard_onto_a_full_disk_leaves_no_temp_files(capsys, small_task, tokenizer, tmp_path):
    with mounted(tmp_path / "disk", size="40k") as disk:
        code, err = janus(capsys, "data", "shard", small_task, "--tokenizer", tokenizer.path, "--out", disk / "shards",
                          "--workers", "1")
        assert code == 1 and f"{disk / 'shards'}: no space left on the device" in one_line(err)
        assert list(disk.iterdir()) == []


def test_ctrl_c_stops_at_a_checkpoint_with_exit_130_and_the_rerun_resumes(run):
    run_dir, interrupted, resumed, step = run
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    assert "Traceback" not in interrupted.stderr
    assert "run the same command to resume" in interrupted.stderr.strip().splitlines()[-1]
    assert 5 <= step < 400
    assert resumed.returncode == 0 and f"resuming from step {step}" in resumed.stdout, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, step + 3))


# 5. errors that name their file (and line)

def test_a_toml_syntax_error_names_the_file_and_line(capsys, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text('model_preset = "tiny"\nmax_steps = = 5\nlr = 0.1\n')
    code, err = janus(capsys, "pretrain", "--config", config)
    line = one_line(err)
    assert code == 2 and str(config) in line and "line 2" in line


@pytest.mark.parametrize("content, says", [("{not json", "not valid JSON (line 1"),
                                           ('["shard-00000.tar"]', "not a shard index")])
def test_a_bad_index_json_names_the_file(capsys, shards, tokenizer, tmp_path, content, says):
    broken = tmp_path / "shards"
    shutil.copytree(shards, broken)
    (broken / "index.json").write_text(content)
    code, err = janus(capsys, *_pretrain_args(broken, tokenizer.path, tmp_path / "run"))
    line = one_line(err)
    assert code == 2 and str(broken / "index.json") in line and says in line


def test_non_utf8_task_data_names_the_file_and_line(capsys, small_task, tmp_path):
    data = tmp_path / "task"
    shutil.copytree(small_task, data)
    lines = (data / "train.src").read_bytes().split(b"\n")
    lines[6] = "Caf\u00e9 menu".encode("latin-1")
    (data / "train.src").write_bytes(b"\n".join(lines))
    code, err = janus(capsys, "finetune", "--task", "nmt", "--data", data, "--init", "scratch",
                      f"run_dir={tmp_path / 'ft'}")
    line = one_line(err)
    assert code == 2 and f"{data / 'train.src'} line 7" in line and "not UTF-8" in line


def test_evaluating_a_truncated_checkpoint_gives_the_checksum_verdict(capsys, run, nmt_dir, tmp_path):
    run = run[0]
    newest = sorted((run / "checkpoints").glob("step-*"))[-1]
    step = tmp_path / newest.name
    shutil.copytree(newest, step)
    part = step / "mp_rank_00_model_states.pt"
    part.write_bytes(part.read_bytes()[:1000])
    code, err = janus(capsys, "evaluate", "--model", step, "--data", nmt_dir, "--out", tmp_path / "eval")
    line = one_line(err)
    assert code == 2 and str(part) in line and "sha256 differs from COMPLETE.json (truncated or modified)" in line
    assert not (tmp_path / "eval").exists()


def test_an_invalid_image_reference_writes_no_manifest(capsys, tmp_path):
    out = tmp_path / "job.yaml"
    code, err = janus(capsys, "submit", "k8s", "--image", "Not A/Valid:Image!!", "--out", out, "--", "janus",
                      "pretrain")
    assert code == 2 and "is not an image reference" in one_line(err) and not out.exists()


# 6. long inputs: truncated, counted, and a run with no usable pair refused on the driver

@pytest.fixture(scope="module")
def long_task(tmp_path_factory):
    """A summarization task in the GLGE layout whose sources run 300-400 words: Debian long package
    descriptions -> their synopsis (the longest of `janus data fetch summarization`)."""
    from pretrain.datasets import fetch
    from pretrain.inputs import read_pairs

    source = fetch("summarization")
    out = tmp_path_factory.mktemp("long-task")
    for split, count in (("train", 48), ("dev", 4), ("test", 4)):
        pairs = [p for p in read_pairs(source, split) if 300 <= len(p[0].split()) <= 400]
        if len(pairs) < count:  # dev/test are small: take long train pairs the train split does not use
            pairs = [p for p in read_pairs(source, "train") if 300 <= len(p[0].split()) <= 400][-count:]
        (out / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs[:count]))
        (out / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs[:count]))
    return out


def test_long_sources_are_truncated_and_counted_not_dropped(long_task, tmp_path):
    run_dir = tmp_path / "ft"
    proc = janus_process("finetune", "--task", "summarization", "--data", long_task, "--init", "scratch",
                         "--config", "tiny", f"run_dir={run_dir}", "max_steps=3", "checkpoint_every=3",
                         "eval_every=3", "dev_examples=2", "num_workers=1", "window=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "48 pairs: 48 sources truncated to max_source_tokens=128; 0 pairs dropped" in proc.stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["pairs_truncated"] > 0 and rows[-1]["pairs_dropped_too_long"] == 0


def test_a_run_whose_data_yields_no_usable_pair_is_refused_on_the_driver(capsys, long_task, tmp_path):
    code, err = janus(capsys, "finetune", "--task", "summarization", "--data", long_task, "--init", "scratch",
                      "--config", "tiny", f"run_dir={tmp_path / 'ft'}", "long_source=drop")
    line = one_line(err)
    assert code == 2 and "every one of its 48 pairs" in line and "set long_source=truncate" in line
