"""Re-retrieval's decision (flows/reretrieve.py): when it runs, and the reason recorded either way.

The rounds themselves run in tests/test_flows_answer.py, through the job.
"""

from __future__ import annotations

import pytest

from mapreduce_llm.config import RetrievalConfig
from mapreduce_llm.flows.base import Tentative
from mapreduce_llm.flows.reretrieve import decide, round_thresholds
from mapreduce_llm.prompts import ModelCalibration

CALIBRATED = ModelCalibration(map_min_confidence=-0.8, reduce_min_confidence=-0.2)
ON = RetrievalConfig()


def answer(confidence: float | None) -> Tentative:
    """A tentative answer with this confidence."""
    return Tentative("4417", confidence, [])


@pytest.mark.parametrize(
    ("tentative", "calibration", "retrieval", "triggered", "reason"),
    [
        (answer(-0.9), None, ON, False, "qa@2.0.0 has no calibration for model 'm'"),
        (None, None, ON, False, "qa@2.0.0 has no calibration for model 'm'"),
        (answer(-0.9), CALIBRATED, RetrievalConfig(reretrieve=False), False, "off (retrieval.reretrieve/similarity)"),
        (answer(-0.9), CALIBRATED, RetrievalConfig(similarity=False), False, "off (retrieval.reretrieve/similarity)"),
        (
            None,
            CALIBRATED,
            RetrievalConfig(reretrieve_not_found=False),
            False,
            "no chunk gave an answer (reretrieve_not_found off)",
        ),
        (None, CALIBRATED, ON, True, "no chunk gave an answer that passed the checks"),
        (answer(-0.1), CALIBRATED, ON, False, "confidence -0.100 >= calibrated -0.200"),
        (answer(-0.2), CALIBRATED, ON, False, "confidence -0.200 >= calibrated -0.200"),
        (answer(-0.3), CALIBRATED, ON, True, "confidence -0.300 < calibrated -0.200"),
        (answer(None), CALIBRATED, ON, True, "confidence none < calibrated -0.200"),
        (answer(-0.3), CALIBRATED, RetrievalConfig(reretrieve_not_found=False), True, "confidence -0.300 < calibrated"),
    ],
    ids=[
        "uncalibrated",
        "uncalibrated-no-answer",
        "reretrieve-off",
        "similarity-off",
        "no-answer-not-found-off",
        "no-answer",
        "confident",
        "exactly-at-the-bar",
        "unsure",
        "unknown-confidence",
        "unsure-not-found-off",
    ],
)
def test_decide(
    tentative: Tentative | None,
    calibration: ModelCalibration | None,
    retrieval: RetrievalConfig,
    triggered: bool,
    reason: str,
) -> None:
    """decide() re-retrieves an unsure or missing answer of a calibrated prompt, and says why in every case."""
    decision = decide(tentative, calibration, retrieval, prompt="qa@2.0.0", model="m")
    assert decision.triggered is triggered
    assert decision.reason.startswith(reason)
    info = decision.info()
    assert (info.triggered, info.reason, info.rounds) == (triggered, decision.reason, [])


@pytest.mark.parametrize(
    ("thresholds", "expected"),
    [
        ({}, (-0.8, None)),
        ({"min_evidence_similarity": 0.3}, (-0.8, 0.3)),
        ({"reretrieve_min_confidence": -0.4, "min_evidence_similarity": 0.3}, (-0.4, 0.3)),
        ({"reretrieve_min_similarity": 0.5, "min_evidence_similarity": 0.3}, (-0.8, 0.5)),
    ],
    ids=["map-bars", "map-similarity", "own-confidence", "own-similarity"],
)
def test_round_thresholds(thresholds: dict[str, float], expected: tuple[float | None, float | None]) -> None:
    """A re-retrieved answer meets the calibrated re-retrieval bars, else the map answers' bars."""
    calibration = ModelCalibration(map_min_confidence=-0.8, reduce_min_confidence=-0.2, **thresholds)
    assert round_thresholds(calibration) == expected
