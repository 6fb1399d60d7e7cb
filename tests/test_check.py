"""`janus check` on this machine, as a user runs it after installing: every applicable row passes and
the rows that need a GPU say why they do not apply."""

import json
import subprocess
import sys

import torch

from cluster.check import Check


def test_janus_check_passes_on_this_machine_and_writes_its_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "check", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "check.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert report["passed"] and len(rows) == 10
    assert all(r["status"] in ("pass", "n/a") for r in rows.values()), rows
    assert "ranks x ZeRO-2: loss" in rows["pretrain: Ray + DeepSpeed ZeRO-2"]["figure"]
    assert "max |loss difference| 0.0e+00" in rows["checkpoint and resume: identical losses"]["figure"]
    assert "draft == greedy" in rows["export, janus.load, AR beam / greedy / NAR / draft"]["figure"]
    assert rows["bench model: MFU of the measured peak"]["status"] == "pass"
    if not torch.cuda.is_available():  # two gloo ranks stand in for two devices; precision rows need a GPU
        assert rows["ZeRO-3"]["status"] == "pass" and rows["tensor parallel: TP=2 equals TP=1"]["status"] == "pass"
        assert rows["bf16"]["status"] == "n/a" and "no GPU" in rows["bf16"]["figure"]
        assert rows["fp16 with dynamic loss scaling"]["status"] == "n/a"
    assert "| capability" in proc.stdout and (tmp_path / "check.md").read_text().count("| pass ") >= 8


def test_a_failing_row_is_reported_with_its_cause_and_the_check_goes_on(tmp_path):
    check = Check(tmp_path, quick=True)
    check.row("broken", lambda: 1 / 0)
    check.row("device and precision", check.device)
    assert [(r.name, r.status) for r in check.rows] == [("broken", "fail"), ("device and precision", "pass")]
    assert check.rows[0].figure == "ZeroDivisionError: division by zero"
    assert "Traceback" in (tmp_path / "failures.log").read_text()
