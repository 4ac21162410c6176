"""benchmarks/calibrate.py's threshold search, on labelled observations (no engine)."""

from __future__ import annotations

from tests.conftest import benchmark_module

cal = benchmark_module("calibrate")


def test_map_thresholds_keep_right_answers_and_drop_wrong_ones() -> None:
    documents = {"a": "4417", "b": "heron", "c": None, "d": None}
    obs = [
        cal.Observed("a", -0.10, 0.80, True),
        cal.Observed("b", -0.20, 0.70, True),
        cal.Observed("c", -0.15, 0.05, False),  # confident but off topic: only the similarity bar drops it
        cal.Observed("d", -0.90, 0.60, False),  # on topic but unsure: only the confidence bar drops it
    ]
    conf, sim, (right, wrong_kept) = cal.map_thresholds(obs, documents)
    assert right == 4 and wrong_kept == 0
    assert conf <= -0.20 and sim <= 0.70  # both right answers pass
    assert sim > 0.05 or conf > -0.15  # c is dropped
    assert sim > 0.60 or conf > -0.90  # d is dropped
    assert cal.decide(obs, documents, conf, sim) == {"a": True, "b": True, "c": True, "d": True}


def test_reretrieval_thresholds_accept_what_helps_and_refuse_what_hurts() -> None:
    chosen = {"a": False, "b": True, "c": True}  # map-reduce: a missed, b right, c (no fact) right
    rounds = [
        cal.Round("a", -0.2, 0.7, True),  # re-retrieval finds a's fact
        cal.Round("c", -0.6, 0.3, False),  # and invents one for c
    ]
    conf, sim, (right, wrong) = cal.reretrieve_thresholds(rounds, chosen)
    assert right == 3 and wrong == 0
    assert (conf <= -0.2 and sim <= 0.7) and (conf > -0.6 or sim > 0.3)


def test_trigger_sits_between_wrong_and_right_final_confidences() -> None:
    obs = [cal.Observed("a", -0.1, 0.8, True), cal.Observed("b", -0.5, 0.8, False)]
    chosen = {"a": True, "b": False}
    trigger = cal.reretrieve_trigger(obs, chosen, -1.0, 0.0)
    assert -0.5 < trigger <= -0.1
