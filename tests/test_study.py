"""The study's arithmetic on hand-made runs: seed means and spreads, the paired bootstrap on pooled seeds,
and each verdict (holds / does not hold / no verdict) where it must come out."""

import json

import pytest

from finetune.study import StudyConfig, _finished, _report, aggregate, claims, markdown, plot, save_hypotheses


def _run(out, key, task, scores, hyps, seed):
    hyp_dir = out / "hyps" / key
    save_hypotheses({setting: {"hypotheses": lines} for setting, lines in hyps.items()}, hyp_dir)
    return {"task": task, "objective": key.split("-")[1], "init": "scratch", "seed": seed, "steps": 100,
            "max_steps": 100, "train_seconds": 60.0, "target_tokens": 1000, "final_loss": 3.0, "best_dev": 5.0,
            "best_dev_step": 80, "dev_metric": "bleu", "stopped": "max_steps", "dev_curve": [[50, 3.0], [100, 5.0]],
            "test_examples": len(next(iter(hyps.values()))), "hypotheses": str(hyp_dir.relative_to(out)),
            "results": {s: {"bleu": v, "latency_ms_b1": 10.0} for s, v in scores.items()}}


def test_claims_pool_seeds_and_give_each_verdict(tmp_path, real_pairs):
    refs = [t for _, t in real_pairs[:120]]
    weak = [" ".join(r.split()[:2]) for r in refs]  # a poor system: the first two words
    rows = {}
    for seed in (0, 1, 2):
        rows[f"nmt-janus-s{seed}"] = _run(tmp_path, f"nmt-janus-s{seed}", "nmt",
                                          {"ar_beam5": 30.0 + seed, "nar_T10": 12.0},
                                          {"ar_beam5": refs, "nar_T10": weak}, seed)
        rows[f"nmt-ar-s{seed}"] = _run(tmp_path, f"nmt-ar-s{seed}", "nmt", {"ar_beam5": 10.0 + seed},
                                       {"ar_beam5": weak}, seed)
        rows[f"nmt-cmlm-s{seed}"] = _run(tmp_path, f"nmt-cmlm-s{seed}", "nmt", {"nar_T10": 11.0},
                                         {"nar_T10": weak}, seed)
    summary = aggregate(rows)
    assert summary["nmt-janus"]["scores"]["ar_beam5"]["mean"] == 31.0
    assert summary["nmt-janus"]["scores"]["ar_beam5"]["sd"] == 1.0
    found = {c["claim"]: c for c in claims(rows, summary, tmp_path, {"nmt": refs})}
    gain = found["JANUS-AR >= AR-only + 1 BLEU"]
    assert gain["difference"] == 20.0 and gain["verdict"] == "holds" and gain["p_value"] < 0.05
    assert gain["seeds"] == [0, 1, 2]
    nar = found["JANUS-NAR(T=10) >= CMLM-only(T=10) + 2 BLEU"]
    assert nar["difference"] == 1.0 and nar["verdict"] == "does not hold"
    close = found["JANUS-NAR(T=10) within 2 BLEU of AR-only beam 5"]
    assert close["difference"] == 1.0 and close["verdict"] == "holds"
    assert "JANUS-AR >= AR with R-Drop" not in found  # an arm that did not run gives no claim
    report = {"date": "2026-12-01", "commit": "x", "load_average": 1.0, "arms": rows, "summary": summary,
              "claims": list(found.values()),
              "config": {"seeds": [0, 1, 2], "patience": 0, "preset": "tiny", "dropout": 0.3, "budget": 100,
                         "janus_ratio": 2.0, "workers": 2, "token_budget": 1024, "eval_every": 10, "train_pairs": 0,
                         "test_examples": 0, "latency_examples": 10, "lr": 1e-3, "vocab_size": 2000}}
    text = markdown(report)
    assert "| nmt-janus | 3 | 100 (max_steps) |" in text and "31.00 ± 1.00" in text
    assert "| JANUS-NAR(T=10) >= CMLM-only(T=10) + 2 BLEU | 12.00 ± 0.00 vs 11.00 ± 0.00 | +1.00 | +2.0 |" in text
    plot(rows, summary, tmp_path / "results.png")
    assert (tmp_path / "results.png").stat().st_size > 10_000
    json.dumps(report)  # results.json holds it


def test_equal_systems_get_no_verdict_on_a_gain(tmp_path, real_pairs):
    refs = [t for _, t in real_pairs[:60]]
    rows = {}
    for seed in (0, 1):
        rows[f"nmt-janus-s{seed}"] = _run(tmp_path, f"nmt-janus-s{seed}", "nmt", {"ar_beam5": 20.0},
                                          {"ar_beam5": refs}, seed)
        rows[f"nmt-ar-rdrop-s{seed}"] = _run(tmp_path, f"nmt-ar-rdrop-s{seed}", "nmt", {"ar_beam5": 20.0},
                                             {"ar_beam5": refs}, seed)
    summary = aggregate(rows)
    assert set(summary) == {"nmt-janus", "nmt-ar-rdrop"}  # "-s<seed>" is cut from the right only
    found = {c["claim"]: c for c in claims(rows, summary, tmp_path, {"nmt": refs})}
    same = found["JANUS-AR >= AR with R-Drop"]
    assert same["difference"] == 0.0 and same["verdict"] == "no verdict (not significant)" and same["holds"] is None


def test_a_study_continues_from_its_committed_results_and_refuses_another_regime(tmp_path, real_pairs):
    """results.json (committed; the run directories are not) is where a rerun on a new machine picks up."""
    refs = [t for _, t in real_pairs[:40]]
    study = StudyConfig(preset="tiny", dropout=0.3, seeds=(0, 1), tasks=("nmt",), arms=("ar", "janus"))
    rows = {"nmt-ar-s0": _run(tmp_path, "nmt-ar-s0", "nmt", {"ar_beam5": 10.0}, {"ar_beam5": refs}, 0)}
    _report(study, tmp_path, rows, {"nmt": refs})
    assert _finished(study, tmp_path) == json.loads(json.dumps(rows))
    assert (tmp_path / "results.png").is_file() and "nmt-ar" in (tmp_path / "results.md").read_text()
    more_seeds = StudyConfig(preset="tiny", dropout=0.3, seeds=(0, 1, 2), tasks=("nmt",), arms=("ar", "janus"))
    assert set(_finished(more_seeds, tmp_path)) == {"nmt-ar-s0"}  # more seeds or arms: the same study, longer
    with pytest.raises(ValueError, match=r"results.json: made with other dropout=0.3"):
        _finished(StudyConfig(preset="tiny", dropout=0.1, seeds=(0, 1)), tmp_path)
