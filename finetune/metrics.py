"""Task metrics, computed by maintained libraries: sacreBLEU (BLEU, chrF, with signatures), Google's
rouge-score (ROUGE-1/2/L F1), NLTK's METEOR (over WordNet 3.0 from Debian's wordnet-base package).
Distinct-n (Li et al., 2016) has no library: unique n-grams over all n-grams of all hypotheses."""

from __future__ import annotations

import gzip
import re
import shutil
from functools import lru_cache

import sacrebleu

from janus.files import new_directory

TASK_METRICS = {
    "nmt": ("bleu", "chrf"),
    "summarization": ("rouge1", "rouge2", "rougeL"),
    "question_generation": ("bleu4", "rougeL", "meteor"),
    "dialogue": ("bleu1", "bleu2", "distinct1", "distinct2"),
}
PRIMARY = {"nmt": "bleu", "summarization": "rougeL", "question_generation": "bleu4", "dialogue": "bleu2"}


def bleu(hyps: list[str], refs: list[str], max_order: int = 4) -> tuple[float, str]:
    metric = sacrebleu.metrics.BLEU(max_ngram_order=max_order)
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())


def chrf(hyps: list[str], refs: list[str]) -> tuple[float, str]:
    metric = sacrebleu.metrics.CHRF()
    return metric.corpus_score(hyps, [refs]).score, str(metric.get_signature())


def rouge(hyps: list[str], refs: list[str], kinds=("rouge1", "rouge2", "rougeL")) -> dict[str, float]:
    """Mean F1 x 100 over examples (Porter stemming, as the GLGE and CNN/DM papers report)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    totals = dict.fromkeys(kinds, 0.0)
    for h, r in zip(hyps, refs):
        for k, s in scorer.score(r, h).items():
            totals[k] += s.fmeasure
    return {k: 100 * v / max(1, len(hyps)) for k, v in totals.items()}


@lru_cache(maxsize=1)
def wordnet():
    """NLTK's WordNet reader over Debian's wordnet-base (pinned, sha256-checked; no nltk_data download).
    The package ships the lexicographer file table only as a man page: `lexnames` is written from it."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    from pretrain.packages import cache_dir
    from pretrain.sources.docs import fetch

    root, _ = fetch("wordnet-base")
    out = cache_dir() / "wordnet-3.0"
    if not (out / "lexnames").is_file():
        with new_directory(out, replace=True) as tmp:
            shutil.copytree(root / "usr/share/wordnet", tmp, dirs_exist_ok=True)
            page = gzip.open(root / "usr/share/man/man5/lexnames.5WN.gz", "rt").read()
            category = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
            rows = re.findall(r"^(\d\d)\t((noun|verb|adj|adv)\.\w+) *\t", page, flags=re.M)
            if [int(n) for n, _, _ in rows] != list(range(45)):
                raise RuntimeError(f"could not read the 45 lexicographer files from {root}'s lexnames(5) page")
            (tmp / "lexnames").write_text("".join(f"{n}\t{name}\t{category[cat]}\n" for n, name, cat in rows))
    if str(out) not in nltk.data.path:
        nltk.data.path.append(str(out))  # NLTK only reads corpora under its data path

    class WordNet30(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):  # this is the WordNet 3.0 NLTK maps others to: no mapping
            return None

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": we need none
        return WordNet30(str(out), None)


def meteor(hyps: list[str], refs: list[str]) -> float:
    """Mean METEOR x 100 (NLTK, default parameters, lower-cased whitespace tokens)."""
    from nltk.translate.meteor_score import meteor_score

    wn = wordnet()
    scores = [meteor_score([r.lower().split()], h.lower().split(), wordnet=wn) for h, r in zip(hyps, refs)]
    return 100 * sum(scores) / max(1, len(scores))


def distinct(hyps: list[str], n: int) -> float:
    grams = [tuple(toks[i:i + n]) for h in hyps for toks in [h.split()] for i in range(len(toks) - n + 1)]
    return 100 * len(set(grams)) / len(grams) if grams else 0.0


def task_scores(task: str, hyps: list[str], refs: list[str]) -> dict:
    """The task's metrics (x 100) and, where a library gives one, its signature."""
    if task not in TASK_METRICS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_METRICS)}")
    out: dict = {}
    if task == "nmt":
        out["bleu"], out["bleu_signature"] = bleu(hyps, refs)
        out["chrf"], out["chrf_signature"] = chrf(hyps, refs)
    elif task == "summarization":
        out.update(rouge(hyps, refs))
    elif task == "question_generation":
        out["bleu4"], out["bleu_signature"] = bleu(hyps, refs)
        out["rougeL"] = rouge(hyps, refs, ("rougeL",))["rougeL"]
        out["meteor"] = meteor(hyps, refs)
    else:
        out["bleu1"], _ = bleu(hyps, refs, 1)
        out["bleu2"], out["bleu_signature"] = bleu(hyps, refs, 2)
        out["distinct1"], out["distinct2"] = distinct(hyps, 1), distinct(hyps, 2)
    return out


def paired_bootstrap(system: list[str], baseline: list[str], refs: list[str], samples: int = 1000) -> float:
    """sacreBLEU's paired bootstrap resampling (Koehn, 2004) of corpus BLEU: the p-value of `system`'s
    difference from `baseline` on the same references (sacreBLEU's fixed seed)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    _, scores = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": BLEU()}, [refs],
                           test_type="bs", n_samples=samples)()
    return float(scores["BLEU"][1].p_value)
