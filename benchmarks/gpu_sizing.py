"""GPU sizing on paper, from model config files: weights, KV cache per token, KV-cache tokens per GPU and the
``max_num_seqs`` that fits a job's ``max_model_len``, for common GPUs. Prints a Markdown table (deploy/README.md).

For each model (a Hugging Face ``config.json``, or the trimmed copies in ``benchmarks/sizing/``, which name their
source) and each GPU:

* **weights** = parameters x dtype bytes, the parameters counted from the config's shapes (embeddings, attention
  q/k/v/o, gated MLP, norms, an untied LM head) — a dense Llama-style decoder (Llama, Mistral, Qwen2);
* **KV cache per token** = layers x KV heads x head dim x 2 (K and V) x dtype bytes (vLLM's cache dtype ``auto``
  is the model's);
* **tensor parallelism**: the smallest TP (1, 2, 4, 8) whose weight shard leaves room for one full-length
  sequence of KV cache on each GPU; each GPU then holds 1/TP of the weights and of the KV heads (at least one);
* **KV-cache tokens per GPU** = (memory x ``gpu_memory_utilization`` - overhead - weights / TP) / KV bytes per
  token per GPU, rounded down to whole blocks of ``block_size`` tokens, as vLLM allocates it; ``overhead`` stands
  for what vLLM's start-up profiling subtracts besides the weights (activation peak, CUDA graphs, non-torch
  memory): read yours in the engine's start log and pass it with ``--overhead-gib``;
* **max_num_seqs** for a ``max_model_len`` = blocks // blocks per full-length sequence: that many sequences can
  all reach the full context at once (vLLM's "maximum concurrency"); "-" where the model's context is shorter.

GPU memory is the nominal capacity in GiB (the driver reports a little less; the overhead covers it).

    python benchmarks/gpu_sizing.py                                  # the models of benchmarks/sizing/
    python benchmarks/gpu_sizing.py /models/MyModel/config.json --max-model-len 16384 --overhead-gib 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
SIZING = Path(__file__).resolve().parent / "sizing"

GPUS: dict[str, float] = {"L4": 24, "A10G": 24, "A100-40GB": 40, "A100-80GB": 80, "H100-80GB": 80}
"""Nominal memory of each GPU, GiB."""

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1, "fp8": 1}
TENSOR_PARALLEL = (1, 2, 4, 8)
"""Tensor-parallel sizes tried, smallest first (one node: at most 8 GPUs)."""
QKV_BIAS_MODEL_TYPES = {"qwen2"}
"""Architectures whose q/k/v projections have biases although their config has no ``attention_bias``."""
REQUIRED = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
    "max_position_embeddings",
)


class SizingError(ValueError):
    """A config file this script cannot size; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Model:
    """What sizing needs from a model config."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int
    tied_embeddings: bool
    qkv_bias: bool
    dtype: str

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def parameters(self) -> int:
        """Parameters from the shapes: embeddings (+ LM head unless tied), per layer attention q/k/v/o (+ q/k/v
        biases), gated MLP (gate, up, down), two RMSNorm weights; the final norm."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        if self.qkv_bias:
            attention += q + 2 * kv
        per_layer = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden

    @property
    def weight_bytes(self) -> int:
        return self.parameters * self.dtype_bytes

    def kv_bytes_per_token(self, tensor_parallel: int = 1) -> int:
        """KV cache of one token on one GPU: layers x KV heads (this GPU's share, at least one) x head dim x 2
        (K and V) x dtype bytes."""
        heads = max(1, self.kv_heads // tensor_parallel)
        return self.layers * heads * self.head_dim * 2 * self.dtype_bytes


def load_model(path: Path) -> Model:
    """A :class:`Model` from a config.json (or a trimmed copy with ``_model``/``_source``); SizingError if unusable."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SizingError(f"{path}: no such file; give the path of a model's config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SizingError(f"{path}: not a readable JSON file ({exc}); give a model's config.json") from None
    if not isinstance(config, dict):
        raise SizingError(f"{path}: expected a JSON object (a model's config.json), got {type(config).__name__}")
    for key in ("num_local_experts", "num_experts", "n_routed_experts"):
        if config.get(key):
            raise SizingError(
                f"{path}: {key}={config[key]}: mixture-of-experts models are not sized by this script "
                "(it counts the parameters of a dense Llama-style decoder)"
            )
    missing = [key for key in REQUIRED if not isinstance(config.get(key), int) or config[key] <= 0]
    if missing:
        raise SizingError(
            f"{path}: missing or not a positive integer: {', '.join(missing)}; these fields of the model's "
            "config.json are what the sizing is computed from"
        )
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    if dtype not in DTYPE_BYTES:
        raise SizingError(f"{path}: torch_dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    if heads % kv_heads:
        raise SizingError(f"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    return Model(
        name=str(config.get("_model") or (path.parent.name if path.name == "config.json" else path.stem)),
        hidden=config["hidden_size"],
        intermediate=config["intermediate_size"],
        layers=config["num_hidden_layers"],
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=config["vocab_size"],
        context=config["max_position_embeddings"],
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=bool(config.get("attention_bias", config.get("model_type") in QKV_BIAS_MODEL_TYPES)),
        dtype=dtype,
    )


@dataclass(frozen=True)
class Fit:
    """One model on one GPU type: the tensor parallelism it needs and the KV cache left on each GPU."""

    model: Model
    gpu: str
    tensor_parallel: int | None
    """GPUs per engine replica; None: does not fit even at the largest TP tried."""
    kv_cache_bytes: int = 0
    """KV cache on each GPU, bytes (whole blocks)."""
    kv_tokens: int = 0
    """Tokens of KV cache per replica (each GPU holds its share of the heads of the same tokens)."""
    block_size: int = 16

    def max_num_seqs(self, max_model_len: int) -> int | None:
        """Sequences that can all hold ``max_model_len`` tokens at once; None if the model's context is shorter."""
        if max_model_len > self.model.context or self.tensor_parallel is None:
            return None
        return (self.kv_tokens // self.block_size) // math.ceil(max_model_len / self.block_size)


def fit(
    model: Model,
    gpu: str,
    memory_gib: float,
    tensor_parallel: int,
    *,
    utilization: float = 0.9,
    overhead_gib: float = 2.0,
    block_size: int = 16,
) -> Fit:
    """``model`` on ``tensor_parallel`` GPUs of type ``gpu``: the KV cache left on each (whole blocks; none when
    the weight shard and the overhead take all of ``utilization``)."""
    free = memory_gib * GIB * utilization - overhead_gib * GIB - model.weight_bytes / tensor_parallel
    block_bytes = model.kv_bytes_per_token(tensor_parallel) * block_size
    blocks = int(free // block_bytes) if free > 0 else 0
    return Fit(model, gpu, tensor_parallel, blocks * block_bytes, blocks * block_size, block_size)


def fits(
    model: Model,
    gpu: str,
    memory_gib: float,
    *,
    need_tokens: int,
    utilization: float = 0.9,
    overhead_gib: float = 2.0,
    block_size: int = 16,
) -> list[Fit]:
    """The smallest tensor parallelism at which ``model`` fits ``gpu`` with KV cache for ``need_tokens`` per replica
    — and, when that is more than one GPU, each larger one too (more GPUs per replica: more KV cache each); a Fit
    with ``tensor_parallel`` None when none does. vLLM splits the attention heads evenly: TP must divide them."""
    found = []
    for tp in TENSOR_PARALLEL:
        if model.heads % tp:
            continue
        one = fit(model, gpu, memory_gib, tp, utilization=utilization, overhead_gib=overhead_gib, block_size=block_size)
        if one.kv_tokens and one.kv_tokens >= need_tokens:
            found.append(one)
            if tp == 1:
                break
    return found or [Fit(model, gpu, None, block_size=block_size)]


def _gib(value: float) -> str:
    return f"{value / GIB:.1f}"


HEADER = ("model", "weights GiB", "KV KiB/token", "GPU", "TP", "weights GiB/GPU", "KV GiB/GPU", "KV tokens/replica")


def _row(found: Fit, lens: list[int]) -> list[str]:
    model, tp = found.model, found.tensor_parallel
    cells = [model.name, _gib(model.weight_bytes), f"{model.kv_bytes_per_token() / 1024:g}", found.gpu]
    if tp is None:
        return [*cells, f"> {TENSOR_PARALLEL[-1]}", "-", "-", "-"] + ["-"] * len(lens)
    cells += [str(tp), _gib(model.weight_bytes / tp), _gib(found.kv_cache_bytes), f"{found.kv_tokens:,}"]
    return cells + [str(seqs) if (seqs := found.max_num_seqs(n)) is not None else "-" for n in lens]


def table(
    models: list[Model],
    gpus: dict[str, float],
    max_model_lens: list[int],
    *,
    utilization: float = 0.9,
    overhead_gib: float = 2.0,
    block_size: int = 16,
) -> str:
    """The sizing as a Markdown table: a row per model, GPU and tensor parallelism (see :func:`fits`)."""
    lens = sorted(max_model_lens)
    head = [*HEADER, *(f"max_num_seqs @{n}" for n in lens)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in models:
        need = min(max(lens), model.context)  # one sequence of the longest context it has
        for gpu, memory in gpus.items():
            found = fits(
                model, gpu, memory, need_tokens=need, utilization=utilization, overhead_gib=overhead_gib,
                block_size=block_size,
            )  # fmt: skip
            rows += ["| " + " | ".join(_row(one, lens)) + " |" for one in found]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", type=Path, help="config.json files (default: benchmarks/sizing/*.json)")
    parser.add_argument("--max-model-len", type=int, action="append", help="repeat; default: 4096 and 8192")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--overhead-gib", type=float, default=2.0, help="per GPU, besides weights and KV cache")
    parser.add_argument("--block-size", type=int, default=16, help="vLLM's KV-cache block, tokens")
    args = parser.parse_args(argv)
    lens = args.max_model_len or [4096, 8192]
    if not 0 < args.gpu_memory_utilization <= 1:
        parser.error(f"--gpu-memory-utilization must be in (0, 1], got {args.gpu_memory_utilization}")
    if args.overhead_gib < 0 or args.block_size <= 0 or any(n <= 0 for n in lens):
        parser.error("--overhead-gib must be >= 0, --block-size and --max-model-len > 0")
    paths = args.configs or sorted(SIZING.glob("*.json"))
    try:
        models = sorted((load_model(path) for path in paths), key=lambda model: model.parameters)
    except SizingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"gpu_memory_utilization {args.gpu_memory_utilization:g}, overhead {args.overhead_gib:g} GiB per GPU, "
        f"block size {args.block_size}, dtype as the config's torch_dtype\n"
    )
    print(
        table(
            models, GPUS, lens, utilization=args.gpu_memory_utilization, overhead_gib=args.overhead_gib,
            block_size=args.block_size,
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
