"""The minimum-sample guard and the verdicts a job's drift comes to (monitoring/verdicts.py), with old baselines
and summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mapreduce_llm.monitoring.baselines import BaselineStore
from mapreduce_llm.monitoring.drift import build_baseline, job_drift
from mapreduce_llm.monitoring.verdicts import OLD_BASELINE, DriftGuard, any_alert, score_lines
from mapreduce_llm.results import JobSummary, VersionDrift
from tests.test_monitoring_drift import LEGAL, PYTHON, _profiles
from tests.test_monitoring_profiles import SUMMARY

KEY = "summarize@1.0.0"
GUARD_20 = DriftGuard(min_documents=20, min_chunks=20)
"""A lower minimum than the default 40, for the small synthetic samples below."""


def test_a_small_job_is_withheld_and_flagged_with_its_counts() -> None:
    """5 documents against a 45-document baseline (default minimum 40): no score, no p-value, status
    insufficient with both sides' counts and the reason."""
    baseline = build_baseline("b", _profiles(PYTHON, 45, seed=1), "x")
    judged = job_drift(baseline, _profiles(LEGAL, 5, seed=2))[KEY]
    assert judged == VersionDrift(
        status="insufficient",
        documents=5,
        chunks=15,
        baseline_documents=45,
        baseline_chunks=135,
        note="the job has 5 documents, the job has 15 chunks; drift needs at least 40 documents and 40 chunks on "
        "each side (monitoring.drift_min_documents, drift_min_chunks)",
    )


def test_a_small_baseline_withholds_too() -> None:
    """The minimum holds on the baseline's side as well: 30 job documents against a 5-document baseline."""
    baseline = build_baseline("b", _profiles(PYTHON, 5, seed=1), "x")
    judged = job_drift(baseline, _profiles(PYTHON, 30, seed=2), GUARD_20)[KEY]
    assert judged.status == "insufficient" and judged.scores == {} and judged.mmd_p_value is None
    assert judged.note is not None and judged.note.startswith("the baseline has 5 documents, the baseline has 15")


def test_the_chunk_minimum_counts_chunks() -> None:
    """Enough documents but too few chunks (a guard of 5 documents and 40 chunks; 10 documents of 3 chunks)."""
    baseline = build_baseline("b", _profiles(PYTHON, 30, seed=1), "x")
    judged = job_drift(baseline, _profiles(PYTHON, 10, seed=2), DriftGuard(min_documents=5, min_chunks=40))[KEY]
    assert judged.status == "insufficient" and judged.note is not None
    assert judged.note.startswith("the job has 30 chunks; drift needs at least 5 documents and 40 chunks")


def test_at_the_minimum_every_signal_and_the_p_value_are_given() -> None:
    """20 documents per side under a minimum of 20: scored, the four scores plus MMD² and its p-value; small for
    another kind of text, not small for the same kind."""
    baseline = build_baseline("b", _profiles(PYTHON, 20, seed=1), "x")
    other = job_drift(baseline, _profiles(LEGAL, 20, seed=2), GUARD_20)[KEY]
    same = job_drift(baseline, _profiles(PYTHON, 20, seed=3), GUARD_20)[KEY]
    assert other.status == same.status == "scored" and other.note is None
    assert set(other.scores) == {"document_length", "prompt_class", "embedding_centroid", "retrieval_similarity"}
    assert other.mmd_p_value is not None and other.mmd_p_value < 0.01 and other.mmd is not None and other.mmd > 0
    assert same.mmd_p_value is not None and same.mmd_p_value > 0.05
    assert any_alert({KEY: other})  # the same kind's PSIs can still cross 0.25 at 20 documents: PSI is noisy


def test_insufficient_drift_never_alerts_and_is_printed() -> None:
    """An insufficient verdict is not an alert, whatever was around it; it prints as one line with its reason."""
    judged = VersionDrift(status="insufficient", documents=3, chunks=3, baseline_documents=40, baseline_chunks=40)
    judged = judged.model_copy(update={"note": "the job has 3 documents"})
    assert not any_alert({KEY: judged})
    assert list(score_lines({KEY: judged})) == [f"drift {KEY:20} insufficient: the job has 3 documents"]


def test_a_scored_verdict_prints_its_p_value_with_its_level() -> None:
    """After the scores, one line for the MMD p-value (alert under 0.01), with MMD² and both document counts."""
    judged = VersionDrift(
        status="scored",
        documents=40,
        baseline_documents=80,
        scores={"document_length": 0.05},
        mmd=0.04,
        mmd_p_value=0.002,
    )
    assert [line.split()[:5] for line in score_lines({KEY: judged})] == [
        ["drift", KEY, "document_length", "0.0500", "ok"],
        ["drift", KEY, "mmd_p_value", "0.0020", "alert"],
    ]
    assert "(MMD² 0.0400; 40 documents, baseline 80)" in list(score_lines({KEY: judged}))[1]
    assert any_alert({KEY: judged})


def test_old_baselines_without_vectors_still_load_and_score(tmp_path: Path) -> None:
    """A baseline file written before the vector sample loads; its jobs get every score but no p-value, and a
    note that says to rebuild the baseline."""
    store = BaselineStore(tmp_path)
    path = store.save(build_baseline("old", _profiles(PYTHON, 25, seed=1), "x"))
    data = json.loads(path.read_text())
    for version in data["versions"].values():
        del version["vector_sample"]
    path.write_text(json.dumps(data))
    old = store.load("old")
    assert old.versions[KEY].vector_sample is None and old.versions[KEY].centroid is not None
    judged = job_drift(old, _profiles(LEGAL, 25, seed=2), GUARD_20)[KEY]
    assert judged.status == "scored" and "embedding_centroid" in judged.scores
    assert judged.mmd is None and judged.mmd_p_value is None and judged.note == OLD_BASELINE
    assert list(score_lines({KEY: judged}))[-1] == f"drift {KEY:20} note: {OLD_BASELINE}"


def test_without_embeddings_the_note_says_so() -> None:
    """Profiles without vectors on the job's side: the length and class scores, and why there is no p-value."""
    baseline = build_baseline("b", _profiles(PYTHON, 25, seed=1), "x")
    plain = [p.model_copy(update={"chunk_vectors": None, "similarities": None}) for p in _profiles(PYTHON, 25)]
    judged = job_drift(baseline, plain, GUARD_20)[KEY]
    assert set(judged.scores) == {"document_length", "prompt_class"} and judged.mmd_p_value is None
    assert judged.note == "no chunk embeddings on the job's: no embedding signals, no p-value"


def test_summaries_written_before_the_guard_still_load() -> None:
    """summary.json's drift of earlier releases ({task@version: {signal: score}}) reads as scored."""
    old = SUMMARY.model_dump() | {"drift": {KEY: {"embedding_centroid": 0.3, "prompt_class": 0.05}}}
    drift = JobSummary.model_validate(old).drift
    assert drift == {KEY: VersionDrift(status="scored", scores={"embedding_centroid": 0.3, "prompt_class": 0.05})}


def test_the_guard_refuses_a_minimum_of_zero() -> None:
    """A minimum below 1 is a programming error, said with the values."""
    with pytest.raises(ValueError, match="got 0 documents and 5 chunks"):
        DriftGuard(0, 5)


def test_score_lines_show_each_signal_with_its_level() -> None:
    """One aligned line per task@version and signal, with its score and level; any_alert tells an alert apart."""
    scored = VersionDrift(status="scored", scores={"embedding_centroid": 0.25, "document_length": 0.05})
    assert [line.split() for line in score_lines({"qa@1.0.0": scored})] == [
        ["drift", "qa@1.0.0", "embedding_centroid", "0.2500", "alert"],
        ["drift", "qa@1.0.0", "document_length", "0.0500", "ok"],
    ]
    calm = VersionDrift(status="scored", scores={"document_length": 0.2})
    assert any_alert({"qa@1.0.0": scored}) and not any_alert({"qa@1.0.0": calm}) and not any_alert({})
