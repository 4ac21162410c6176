"""Per-document flows: what happens to one planned document between its map calls and its output.

==========================  ==================================================================================
:mod:`.base`                DocumentRun (one document's context and ``call()``), Outcome, Tentative, AnswerDetails;
                            VersionSettings (sampling, calibration, settings fingerprint of each prompt version)
:mod:`.text`                ``output: text``: map selected chunks → drop "not found" → reduce tree
:mod:`.answer`              ``output: answer``: checked map answers → reduce best first → agreement → re-retrieval
:mod:`.reretrieve`          FLARE: decide whether to ask again (and say why), then bounded rounds over passages
==========================  ==================================================================================

A prompt version's ``output:`` picks its flow. A new output kind is one new module with an
``async def flow(run: DocumentRun) -> Outcome`` and one line in :data:`FLOWS`.
"""

from __future__ import annotations

from mapreduce_llm.common import OutputKind
from mapreduce_llm.flows.answer import answer_flow
from mapreduce_llm.flows.base import AnswerDetails, DocumentRun, Flow, Outcome, Params, Tentative, VersionSettings
from mapreduce_llm.flows.text import text_flow
from mapreduce_llm.prompts import PromptFile

FLOWS: dict[OutputKind, Flow] = {
    "text": text_flow,
    "answer": answer_flow,
}
"""The flow of each output kind."""


def flow_for(prompt: PromptFile) -> Flow:
    """The flow that runs documents under a prompt version with this file (by its ``output:``)."""
    return FLOWS[prompt.output]


__all__ = [
    "FLOWS",
    "AnswerDetails",
    "DocumentRun",
    "Flow",
    "Outcome",
    "Params",
    "Tentative",
    "VersionSettings",
    "flow_for",
]
