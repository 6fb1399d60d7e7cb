"""The main job end to end at a reduced size (real data from the cache, tiny model, a few steps per stage):
every artefact it promises exists, and a second start skips the finished stages."""

import json
import subprocess
import sys


def test_demo_pipeline_end_to_end_and_resumes(tmp_path, nmt_dir):
    from janus.export import verify_export

    run = tmp_path / "demo"
    cmd = [sys.executable, "-m", "cluster.cli", "demo", "--run-dir", str(run), "--preset", "tiny", "--vocab-size", "1000",
           "--minutes", "3", "--pretrain-share", "0.5", "--ar-share", "0.5", "--max-pretrain-steps", "4", "--max-finetune-steps", "4",
           "--eval-examples", "6", "--draft-examples", "3", "--latency-examples", "1", "--pretrain-documents", "300"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for stage in ("data", "pretrain", "finetune-ar", "finetune", "evaluate", "export"):
        assert (run / "stages" / f"{stage}.done").is_file(), stage
    assert [json.loads(line)["step"] for line in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2, 3, 4]
    assert (run / "finetune" / "checkpoints" / "best.json").is_file()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert list(metrics) == ["ar_beam5", "ar_greedy", "nar_T1", "nar_T4", "nar_T10", "draft"]
    assert metrics["draft"]["identical_to_ar_greedy"] == 1.0
    assert metrics["ar_beam5"]["examples"] == 6 and metrics["draft"]["examples"] == 3
    plan = json.loads((run / "plan.json").read_text())
    # the clock split by --pretrain-share, then the fine-tuning time by --ar-share
    assert plan["pretrain_minutes"] == 2 * plan["finetune_ar_minutes"] == 2 * plan["finetune_minutes"] > 0
    assert json.loads((run / "finetune-ar" / "config.json").read_text())["objective"] == "ar-cmlm"
    janus_stage = json.loads((run / "finetune" / "config.json").read_text())
    assert janus_stage["objective"] == "janus" and janus_stage["kl_scale"] == 0.1  # the demo's short-run recipe
    ar_stage = json.loads((run / "finetune-ar" / "config.json").read_text())
    # one linear decay over both stages: the AR stage ends at the lr the JANUS stage starts from
    assert (ar_stage["lr"], ar_stage["lr_end"], janus_stage["lr"], janus_stage["lr_end"]) == (3e-3, 1.5e-3, 1.5e-3, 0.0)
    report = (run / "report.md").read_text()
    for needle in ("| ar_beam5 | 6 |", "| nar_T4 | 6 |", "| draft | 3 |", "sacreBLEU signature", "loss-pretrain.png",
                   "frontier.png", "## Sample translations", "| reference |", "janus demo --minutes 9"):
        assert needle in report, needle
    assert report.count("| nar_T10 | ") == 1 + 5  # the table's row and one per sample
    for png in ("loss-pretrain.png", "loss-finetune-ar.png", "loss-finetune.png", "frontier.png"):
        assert (run / png).stat().st_size > 10_000, png
    assert verify_export(run / "export") == []
    # the JANUS stage's last checkpoint is the model evaluated and exported, whichever had the best dev BLEU
    assert json.loads((run / "export" / "config.json").read_text())["source"]["step"] == 4
    assert "the last checkpoint (step 4, dev BLEU" in report
    assert "| nar_T10 |" in done.stdout  # the final table is printed
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("done already") == 6
