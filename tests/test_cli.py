"""The `janus` command line as a user runs it."""

import json
import subprocess
import sys


def janus(*args):
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True, timeout=600)


def test_bench_model_writes_its_json(tmp_path, nmt_dir):
    out = tmp_path / "bench.json"
    proc = janus("bench", "model", "--preset", "tiny", "--target-tokens", "256", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    for obj in ("ar", "cmlm", "janus"):
        assert report["tokens_per_s"][obj] > 0 and 0 < report["mfu"][obj] < 1.0
    assert report["janus_over_ar"] > 1 and report["janus_over_ar_theory"] > 1
    assert report["peak_gflop_s"] > 0
    assert "JANUS/AR step cost" in proc.stdout


def test_bad_input_gives_one_line_error():
    proc = janus("data", "fetch", "nmt", "--pair", "english")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--pair 'english' must look like SRC-TGT" in proc.stderr
    proc = janus("data", "fetch", "nope")
    assert proc.returncode == 2 and "available: nmt, summarization, dialogue, qg, pretrain-en" in proc.stderr
    proc = janus("demo", "--run-dir", "never-made", "--ar-share", "1")
    assert proc.returncode == 2 and "--ar-share 1 must be in [0, 1)" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    proc = janus("demo", "--run-dir", "never-made", "--kl-scale", "-1")
    assert proc.returncode == 2 and "--kl-scale -1 must be >= 0" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    proc = janus("study", "nmt,translation", "--budget", "10")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "unknown ['translation']" in proc.stderr and "nmt,summarization,dialogue" in proc.stderr
