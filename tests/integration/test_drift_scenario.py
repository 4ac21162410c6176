"""The drift scenario of benchmarks/drift_scenario.py with the real embedding model (no LLM engine needed;
in the integration tier because embedding 120 documents takes a minute or two on 2 cores)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from mapreduce_llm.config import JobSpec
from mapreduce_llm.embeddings import shared_embedder
from mapreduce_llm.errors import DocumentError
from mapreduce_llm.monitoring.drift import build_baseline, job_drift
from mapreduce_llm.monitoring.profiles import DocumentProfile, profile_document
from mapreduce_llm.monitoring.verdicts import level, p_value_level
from mapreduce_llm.runner import plan_job
from tests.conftest import PROMPTS, benchmark_module

PROMPT = benchmark_module("drift_scenario").PROMPT
"""The prompt version the scenario is measured with (pinned in benchmarks/drift_scenario.py)."""


def _scenario() -> ModuleType:
    return benchmark_module("drift_scenario")


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[DocumentProfile]]:
    """Profiles of the three corpora (40 documents each): Python docs, held-out Python docs, license texts."""
    folders = _scenario().build_corpora(tmp_path_factory.mktemp("corpora"), 40)
    embedder = shared_embedder()
    out = {}
    for name, folder in folders.items():
        spec = JobSpec.model_validate(
            {"input": folder, "output": folder / "out", "prompt": PROMPT, "prompts_dir": PROMPTS}
        )
        _, plans = plan_job(spec)
        out[name] = [profile_document(p, embedder) for p in plans if not isinstance(p, DocumentError)]
    return out


def test_corpora_are_disjoint_and_sized(tmp_path: Path) -> None:
    """Baseline and held-out pieces never overlap; each corpus has the requested number of documents."""
    folders = _scenario().build_corpora(tmp_path, 20)
    texts = {name: {p.read_text() for p in folder.iterdir()} for name, folder in folders.items()}
    assert all(len(t) == 20 for t in texts.values())
    assert not texts["baseline"] & texts["heldout"]


def test_held_out_documents_stay_under_every_threshold(profiles: dict[str, list[DocumentProfile]]) -> None:
    """Documents of the baseline's kind (other Python docs pieces; 40, the default minimum) raise no drift alert
    on any signal, the MMD p-value included."""
    baseline = build_baseline("python-docs", profiles["baseline"], "baseline")
    judged = job_drift(baseline, profiles["heldout"])[PROMPT]
    scores = judged.scores
    assert judged.status == "scored" and len(scores) == 4
    assert all(level(signal, score) != "alert" for signal, score in scores.items()), scores
    assert judged.mmd_p_value is not None and p_value_level(judged.mmd_p_value) != "alert", judged


def test_a_different_kind_of_corpus_goes_over_the_thresholds(profiles: dict[str, list[DocumentProfile]]) -> None:
    """License texts scored against a Python-docs baseline: embedding and class signals alert, and the MMD
    p-value is under 0.01."""
    baseline = build_baseline("python-docs", profiles["baseline"], "baseline")
    judged = job_drift(baseline, profiles["different"])[PROMPT]
    scores = judged.scores
    assert level("embedding_centroid", scores["embedding_centroid"]) == "alert", scores
    assert level("prompt_class", scores["prompt_class"]) == "alert", scores
    assert judged.mmd_p_value is not None and p_value_level(judged.mmd_p_value) == "alert", judged
