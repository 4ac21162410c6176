"""What a job's drift comes to: the minimum-sample guard, the MMD test beside the scores, levels, and the lines
``run`` and ``drift check`` print.

- :class:`DriftGuard` judges one task and version: below ``min_documents`` or ``min_chunks`` on either side (the
  job's or the baseline's), a :class:`~mapreduce_llm.results.VersionDrift` says ``insufficient`` with the counts
  and holds no score, so nothing is exported as drift and no drift alert can fire. Otherwise it holds the scores
  (PSI, centroid distance) and the MMD test of the chunk embeddings (:mod:`mapreduce_llm.monitoring.mmd`).
- :func:`level` reads a score as ``ok``, ``warn`` or ``alert``; :func:`p_value_level` a p-value.

PSI thresholds follow the credit-scoring convention (Siddiqi, *Credit Risk Scorecards*, 2006): < 0.1 stable,
0.1-0.25 a moderate shift, > 0.25 a significant one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mapreduce_llm.config import DRIFT_MIN_CHUNKS, DRIFT_MIN_DOCUMENTS
from mapreduce_llm.monitoring.mmd import mmd_test
from mapreduce_llm.results import VersionDrift

if TYPE_CHECKING:
    from mapreduce_llm.monitoring.drift import VersionProfile, VersionTally

PSI_WARN, PSI_ALERT = 0.1, 0.25
"""PSI thresholds (convention, see the module docstring)."""
CENTROID_WARN, CENTROID_ALERT = 0.1, 0.2
"""Cosine distance between embedding centroids. Calibrated on the shipped drift scenario
(benchmarks/drift_scenario.py): held-out Python docs vs their baseline stay below 0.05, license texts
reach 0.5 and more. Raise them for corpora whose topics vary more."""
P_VALUE_WARN, P_VALUE_ALERT = 0.05, 0.01
"""MMD p-values under which the job's chunk embeddings are read as from another distribution than the
baseline's. Each scored task@version is one test: one job in a hundred of an unchanged kind alerts by chance."""

OLD_BASELINE = (
    "the baseline keeps no sample of chunk vectors (made before the MMD test): no p-value; rebuild it with "
    "`mapreduce-llm drift baseline`"
)


@dataclass(frozen=True, slots=True)
class DriftGuard:
    """The minimum sample on each side below which drift is withheld (``monitoring.drift_min_documents`` and
    ``drift_min_chunks``), and the judgement of one task and version."""

    min_documents: int = DRIFT_MIN_DOCUMENTS
    min_chunks: int = DRIFT_MIN_CHUNKS

    def __post_init__(self) -> None:
        if self.min_documents < 1 or self.min_chunks < 1:
            raise ValueError(
                f"drift minimums must be at least 1, got {self.min_documents} documents and {self.min_chunks} chunks"
            )

    def shortfall(self, documents: int, chunks: int, baseline_documents: int, baseline_chunks: int) -> str | None:
        """Why the sample is too small to score (None: it is not)."""
        short = [
            f"{what} has {count} {unit}"
            for what, count, unit, least in (
                ("the job", documents, "documents", self.min_documents),
                ("the job", chunks, "chunks", self.min_chunks),
                ("the baseline", baseline_documents, "documents", self.min_documents),
                ("the baseline", baseline_chunks, "chunks", self.min_chunks),
            )
            if count < least
        ]
        if not short:
            return None
        return (
            f"{', '.join(short)}; drift needs at least {self.min_documents} documents and {self.min_chunks} chunks "
            "on each side (monitoring.drift_min_documents, drift_min_chunks)"
        )

    def judge(self, reference: VersionProfile, tally: VersionTally) -> VersionDrift:
        """The drift of one task and version's documents (``tally``) against its reference."""
        counts = VersionDrift(
            status="insufficient",
            documents=tally.documents,
            chunks=tally.chunks,
            baseline_documents=reference.documents,
            baseline_chunks=reference.chunks,
        )
        short = self.shortfall(tally.documents, tally.chunks, reference.documents, reference.chunks)
        if short is not None:
            return counts.model_copy(update={"note": short})
        current = tally.sampler.sample()
        mmd = p_value = None
        note: str | None = None
        if reference.centroid is None or current is None:
            note = "no chunk embeddings on " + ("the baseline's side" if reference.centroid is None else "the job's")
            note += ": no embedding signals, no p-value"
        elif reference.vector_sample is None:
            note = OLD_BASELINE
        else:
            result = mmd_test(reference.vector_sample, current)
            if result is None:
                note = "fewer than 2 documents with chunk vectors on a side: no p-value"
            else:
                mmd, p_value = round(result.statistic, 6), round(result.p_value, 6)
        return counts.model_copy(
            update={"status": "scored", "scores": tally.scores(), "mmd": mmd, "mmd_p_value": p_value, "note": note}
        )


def level(signal: str, score: float) -> str:
    """``ok``, ``warn`` or ``alert`` for one score, by the documented thresholds."""
    warn, alert = (CENTROID_WARN, CENTROID_ALERT) if signal == "embedding_centroid" else (PSI_WARN, PSI_ALERT)
    return "alert" if score > alert else "warn" if score > warn else "ok"


def p_value_level(p_value: float) -> str:
    """``ok``, ``warn`` or ``alert`` for an MMD p-value (small is a shift)."""
    return "alert" if p_value < P_VALUE_ALERT else "warn" if p_value < P_VALUE_WARN else "ok"


def any_alert(drift: Mapping[str, VersionDrift]) -> bool:
    """True when a scored task@version has a score over its alert threshold or a p-value under it (``drift
    check`` then exits with status 2). Insufficient samples never alert."""
    return any(
        any(level(signal, score) == "alert" for signal, score in v.scores.items())
        or (v.mmd_p_value is not None and p_value_level(v.mmd_p_value) == "alert")
        for v in drift.values()
        if v.status == "scored"
    )


def score_lines(drift: Mapping[str, VersionDrift]) -> Iterator[str]:
    """The drift as ``mapreduce-llm run`` and ``drift check`` print it: per task@version, one line per signal
    with its level, the MMD p-value, and why something is missing; or one line saying the sample is too small."""
    for key, v in drift.items():
        if v.status == "insufficient":
            yield f"drift {key:20} insufficient: {v.note}"
            continue
        for signal, score in v.scores.items():
            yield f"drift {key:20} {signal:22} {score:8.4f}  {level(signal, score)}"
        if v.mmd is not None and v.mmd_p_value is not None:
            yield (
                f"drift {key:20} {'mmd_p_value':22} {v.mmd_p_value:8.4f}  {p_value_level(v.mmd_p_value)}"
                f"  (MMD² {v.mmd:.4f}; {v.documents} documents, baseline {v.baseline_documents})"
            )
        if v.note:
            yield f"drift {key:20} note: {v.note}"
