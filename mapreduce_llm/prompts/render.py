"""Rendering a prompt version into exact token ids: the model's chat template around the stage's slot.

Values are inserted as *data*: they are tokenized with special tokens split, after the template has been
rendered, so text such as ``{document}``, ``{{ x }}``, ``{% if %}`` or ``<|im_start|>`` in a document is never
evaluated as a template or read as a control token. The chunk (or the partial outputs) is the slot: a request is
the stage's prefix, the slot's token ids, then its suffix, so a plan can count every request exactly.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from mapreduce_llm.prompts.files import SLOT, Message, PromptFile, Stage
from mapreduce_llm.tokenization import Tokenizer

_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
_SLOT_INDEX = 999_999_999
_SLOT_MARK = f"\ue000{_SLOT_INDEX}\ue001"


@dataclass(frozen=True, slots=True)
class StageTemplate:
    """One stage rendered for one document, as token ids around the slot.

    A request is ``prefix + slot_ids + suffix``; ``overhead`` tokens are spent on the template.
    """

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @property
    def overhead(self) -> int:
        """Template tokens of every request of this stage."""
        return len(self.prefix) + len(self.suffix)

    def request_ids(self, slot_ids: list[int] | tuple[int, ...]) -> list[int]:
        """The complete prompt token ids with the slot filled."""
        return [*self.prefix, *slot_ids, *self.suffix]


def render_stage(prompt: PromptFile, stage: Stage, values: dict[str, str], tokenizer: Tokenizer) -> StageTemplate:
    """Render a stage's messages with the model's chat template into token ids around the slot.

    ``values`` supplies the declared variables. Template text is tokenized as trusted text; values are
    tokenized as data (special tokens split), so nothing in a value is ever interpreted.
    """
    msg: Message = getattr(prompt, stage)
    data: list[str] = []

    def fill(template: str) -> str:
        out = []
        for literal, name, _, _ in string.Formatter().parse(template):
            out.append(literal)
            if name is None:
                continue
            if name == SLOT[stage]:
                out.append(_SLOT_MARK)
            else:
                data.append(values[name])
                out.append(f"\ue000{len(data) - 1}\ue001")
        return "".join(out)

    messages = []
    if msg.system:
        messages.append({"role": "system", "content": fill(msg.system)})
    messages.append({"role": "user", "content": fill(msg.user)})
    rendered = tokenizer.render_chat(messages)
    prefix: list[int] = []
    suffix: list[int] = []
    target = prefix
    pos = 0
    for match in _SENTINEL_RE.finditer(rendered):
        target.extend(tokenizer.encode_template(rendered[pos : match.start()]))
        index = int(match.group(1))
        if index == _SLOT_INDEX:
            target = suffix
        else:
            target.extend(tokenizer.encode_data(data[index]))
        pos = match.end()
    target.extend(tokenizer.encode_template(rendered[pos:]))
    return StageTemplate(prefix=tuple(prefix), suffix=tuple(suffix))


def document_values(prompt: PromptFile, question: str | None, metadata: dict[str, Any]) -> dict[str, str]:
    """The declared variables' values for one document; raises KeyError naming a missing one."""
    values = {}
    for name in prompt.variables:
        value = question if name == "question" else metadata.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise KeyError(name)
        values[name] = value if isinstance(value, str) else str(value)
    return values
