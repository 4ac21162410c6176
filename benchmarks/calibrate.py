#!/usr/bin/env python3
"""Calibrate the confidence thresholds of an ``output: answer`` prompt version on the dev needle set.

What it does
    1. Builds the dev split of the needle set (benchmarks/needles.py: facts planted in ~11k-token documents,
       plus documents without the fact) — disjoint from the test split quality.py reports on.
    2. Runs the prompt version over it with no thresholds (the prompt folder is copied without its
       calibration file), so every map answer that passes the evidence checks is recorded with its
       confidence (mean logprob of the answer's tokens) and its evidence's similarity to the question.
    3. Labels each such answer: correct when it contains the planted answer; every answer from a document
       without the fact is wrong.
    4. Searches the two map thresholds (``map_min_confidence``, ``min_evidence_similarity``) for the best
       document accuracy on the dev set, deciding each document as the pipeline would: nothing left → "not
       found", else the most confident answer left. Among equally good settings it takes the one in the
       middle of the best region (a margin either side, rather than an edge fitted to 12 documents).
    5. Sets ``reduce_min_confidence`` (re-retrieval trigger) where the final answers' confidence best
       separates right from wrong ones on the dev set.
    6. Runs the dev set again with one round of re-retrieval that accepts every answer passing the evidence
       checks, and searches ``reretrieve_min_confidence`` / ``reretrieve_min_similarity`` the same way: a
       document is right when an accepted re-retrieved answer is right, else when its map-reduce answer was.
       When no wrong re-retrieved answer passes the evidence checks there is nothing to keep out: both stay
       unset and re-retrieved answers face the map thresholds.
    7. Writes prompts/<task>/<version>.calibration.yaml for the served model, with what was measured.

Run
    python benchmarks/calibrate.py                 # qa@2.0.0, ~9 min on 2 CPU cores (engine start included)
    python benchmarks/calibrate.py --dry-run       # print the thresholds, write nothing
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_jobs import ROOT, needles, run, started_engine, write_jsonl

from mapreduce_llm.prompts import ModelCalibration, select_prompts, write_calibration
from mapreduce_llm.results import DocumentResult


@dataclass(frozen=True, slots=True)
class Observed:
    """One map answer that passed the evidence checks, labelled."""

    document: str
    confidence: float
    similarity: float | None
    correct: bool


def observations(results: list[DocumentResult]) -> list[Observed]:
    """Every kept map answer of an uncalibrated run, labelled against the planted answer."""
    out = []
    for r in results:
        expected = r.metadata.get("answer")
        for a in r.answers:
            if a.status != "kept" or a.confidence is None:
                continue
            correct = expected is not None and expected.lower() in (a.answer or "").lower()
            out.append(Observed(r.id, a.confidence, a.evidence_similarity, correct))
    return out


def decide(obs: list[Observed], documents: dict[str, str | None], conf: float, sim: float | None) -> dict[str, bool]:
    """Per document: is the pipeline's answer right under these thresholds (most confident answer left)."""
    best: dict[str, Observed] = {}
    for o in obs:
        if o.confidence < conf or (sim is not None and o.similarity is not None and o.similarity < sim):
            continue
        if o.document not in best or o.confidence > best[o.document].confidence:
            best[o.document] = o
    return {doc: (best[doc].correct if doc in best else expected is None) for doc, expected in documents.items()}


def centre(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The point of ``points`` nearest their centroid (the middle of a tied best region)."""
    cx = statistics.fmean(p[0] for p in points)
    cy = statistics.fmean(p[1] for p in points)
    return min(points, key=lambda p: ((p[0] - cx) / 0.5) ** 2 + ((p[1] - cy) / 0.2) ** 2)


def grid(values: list[float]) -> list[float]:
    """Cut points: below all values, between neighbours, above all."""
    ordered = sorted({round(v, 3) for v in values})
    if not ordered:
        return [0.0]
    return [ordered[0] - 0.01] + [(a + b) / 2 for a, b in itertools.pairwise(ordered)] + [ordered[-1] + 0.01]


def map_thresholds(obs: list[Observed], documents: dict[str, str | None]) -> tuple[float, float, tuple[int, int]]:
    """(map_min_confidence, min_evidence_similarity, (documents right, -wrong answers kept)) on the dev set."""
    scored = []
    for c, s in itertools.product(grid([o.confidence for o in obs]), grid([o.similarity or 0.0 for o in obs])):
        right = sum(decide(obs, documents, c, s).values())
        # Second criterion: wrong answers still reaching the reducer (each one is a chance for it to err).
        wrong_kept = sum(not o.correct and o.confidence >= c and (o.similarity or 1.0) >= s for o in obs)
        scored.append(((right, -wrong_kept), c, s))
    top = max(key for key, _, _ in scored)
    conf, sim = centre([(c, s) for key, c, s in scored if key == top])
    return conf, sim, top


def reretrieve_trigger(obs: list[Observed], chosen: dict[str, bool], conf: float, sim: float) -> float:
    """``reduce_min_confidence``: where the final answers' confidence best separates right from wrong."""
    finals = []
    for doc, right in chosen.items():
        mine = [o for o in obs if o.document == doc and o.confidence >= conf and (o.similarity or 1.0) >= sim]
        if mine:
            finals.append((max(o.confidence for o in mine), right))
    cuts = [conf, *sorted({round(c, 3) for c, _ in finals})]
    return -max((sum((c >= t) == right for c, right in finals), -t) for t in cuts)[1]


@dataclass(frozen=True, slots=True)
class Round:
    """The first re-retrieval round of a dev document, labelled."""

    document: str
    confidence: float
    similarity: float
    correct: bool


def reretrieved(results: list[DocumentResult]) -> list[Round]:
    """First rounds whose answer passed the evidence checks (accepted with no thresholds)."""
    out = []
    for r in results:
        if r.reretrieval is None or not r.reretrieval.rounds:
            continue
        first = r.reretrieval.rounds[0]
        if not first.accepted or first.confidence is None:
            continue
        expected = r.metadata.get("answer")
        correct = expected is not None and expected.lower() in (first.answer or "").lower()
        out.append(Round(r.id, first.confidence, first.evidence_similarity or 0.0, correct))
    return out


def reretrieve_thresholds(rounds: list[Round], chosen: dict[str, bool]) -> tuple[float, float, tuple[int, int]]:
    """(reretrieve_min_confidence, reretrieve_min_similarity, (documents right, -wrong accepted)).

    A document is right when an accepted round is right, or — nothing accepted — when the map-reduce answer was.
    """
    scored = []
    for c, s in itertools.product(grid([r.confidence for r in rounds]), grid([r.similarity for r in rounds])):
        accepted = {r.document: r for r in rounds if r.confidence >= c and r.similarity >= s}
        right = sum(accepted[d].correct if d in accepted else ok for d, ok in chosen.items())
        wrong = sum(not r.correct for r in accepted.values())
        scored.append(((right, -wrong), c, s))
    top = max(key for key, _, _ in scored)
    conf, sim = centre([(c, s) for key, c, s in scored if key == top])
    return conf, sim, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="qa@2.0.0", help="the output: answer prompt version to calibrate")
    parser.add_argument("--out", type=Path, help="work folder (default: out/calibrate/TASK@VERSION)")
    parser.add_argument("--dry-run", action="store_true", help="print the thresholds, do not write them")
    args = parser.parse_args()

    prompt = select_prompts(args.prompt, ROOT / "prompts").base
    args.out = args.out or ROOT / "out" / "calibrate" / prompt.ref
    if prompt.file.output != "answer":
        parser.error(f"{prompt.ref} has output {prompt.file.output!r}; only output: answer prompts are calibrated")
    # A copy of the prompt folder without this version's calibration: the run must apply no thresholds.
    bare = args.out / "prompts"
    shutil.rmtree(bare, ignore_errors=True)
    shutil.copytree(ROOT / "prompts", bare, ignore=shutil.ignore_patterns("*.calibration.yaml"))
    records = needles().build_needle_set("dev")
    documents = {r["id"]: r["answer"] for r in records}
    data = write_jsonl(records, args.out / "dev.jsonl")

    for folder in ("uncalibrated", "reretrieve"):  # results are recomputed; engine outputs come from the cache
        shutil.rmtree(args.out / folder, ignore_errors=True)
    started = time.perf_counter()
    with started_engine() as engine:
        model = engine.info.model
        summary, results = run(
            engine,
            data,
            args.out / "uncalibrated",
            prompt.ref,
            prompts_dir=bare,
            retrieval={"reretrieve": False},
            cache=args.out / "cache.sqlite",
        )
        obs = observations(results)
        print(
            f"dev set: {len(records)} documents, {len(obs)} evidence-checked map answers "
            f"({sum(o.correct for o in obs)} correct), job {summary.seconds:.0f} s"
        )
        conf, sim, top = map_thresholds(obs, documents)
        chosen = decide(obs, documents, conf, sim)
        reduce_conf = reretrieve_trigger(obs, chosen, conf, sim)
        # Second pass: one round of re-retrieval with every checked answer accepted, to see what it finds.
        provisional = ModelCalibration(
            map_min_confidence=conf,
            reduce_min_confidence=reduce_conf,
            min_evidence_similarity=sim,
            reretrieve_min_confidence=-1e9,
            reretrieve_min_similarity=-1.0,
        )
        write_calibration(select_prompts(prompt.ref, bare).base, model, provisional)
        _, second = run(
            engine,
            data,
            args.out / "reretrieve",
            prompt.ref,
            prompts_dir=bare,
            retrieval={"reretrieve": True, "max_rounds": 1},
            cache=args.out / "cache.sqlite",
        )
    seconds = time.perf_counter() - started
    rounds = reretrieved(second)
    re_conf: float | None
    re_sim: float | None
    if any(not r.correct for r in rounds):
        re_conf, re_sim, re_top = reretrieve_thresholds(rounds, chosen)
    else:  # no wrong re-retrieved answer to keep out: re-retrieved answers face the map thresholds
        re_conf = re_sim = None
        accepted = {r.document: r for r in rounds if r.confidence >= conf and r.similarity >= sim}
        re_top = (sum(accepted[d].correct if d in accepted else ok for d, ok in chosen.items()), 0)
    print(f"re-retrieval: {len(rounds)} rounds with a checked answer ({sum(r.correct for r in rounds)} correct)")

    measured = {
        "documents": len(records),
        "needle_documents": sum(v is not None for v in documents.values()),
        "map_answers_checked": len(obs),
        "map_answers_correct": sum(o.correct for o in obs),
        "dev_accuracy_at_thresholds": round(top[0] / len(records), 3),
        "wrong_answers_kept": -top[1],
        "reretrieved_answers_checked": len(rounds),
        "reretrieved_answers_correct": sum(r.correct for r in rounds),
        "dev_accuracy_with_reretrieval": round(re_top[0] / len(records), 3),
        "wrong_reretrieved_answers_accepted": -re_top[1],
        "job_seconds": round(summary.seconds, 1),
        "run_seconds": round(seconds, 1),
    }
    calibration = ModelCalibration(
        map_min_confidence=round(conf, 4),
        reduce_min_confidence=round(reduce_conf, 4),
        min_evidence_similarity=round(sim, 4),
        reretrieve_min_confidence=None if re_conf is None else round(re_conf, 4),
        reretrieve_min_similarity=None if re_sim is None else round(re_sim, 4),
        dev_set="benchmarks/needles.py dev split",
        measured=measured,
    )
    print(json.dumps(calibration.model_dump(), indent=2))
    if args.dry_run:
        return
    path = write_calibration(prompt, model, calibration)
    print(f"wrote {path.relative_to(ROOT)} for model {model}")


if __name__ == "__main__":
    main()
