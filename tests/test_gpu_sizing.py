"""benchmarks/gpu_sizing.py: weights, KV cache per token, KV tokens per GPU and max_num_seqs from a model config,
checked against a hand computation; the table in deploy/README.md is the script's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, benchmark_module

sizing = benchmark_module("gpu_sizing")
GIB = 1024**3
QWEN = ROOT / "benchmarks" / "sizing" / "Qwen2.5-7B-Instruct.json"
LLAMA_70B = ROOT / "benchmarks" / "sizing" / "Meta-Llama-3-70B-Instruct.json"


def test_qwen_7b_on_an_80_gb_gpu_matches_the_hand_computation() -> None:
    """Qwen2.5-7B (bf16) on 80 GiB at 0.9 with 2 GiB overhead: parameters, weights, KV/token, blocks, max_num_seqs."""
    model = sizing.load_model(QWEN)
    # embeddings + untied LM head: 2 x 152064 x 3584 = 1,089,994,752
    # per layer: q 3584x3584 + 3584 bias, k and v 3584x512 + 512 bias each, o 3584x3584,
    #   MLP 3 x 3584 x 18944, two norms 2 x 3584  = 233,057,792;  x 28 layers = 6,525,618,176
    # + final norm 3584                           = 7,615,616,512 (Qwen's model card: 7.61B)
    assert model.parameters == 7_615_616_512
    assert model.weight_bytes == 15_231_233_024  # x 2 bytes (bfloat16)
    assert model.kv_bytes_per_token() == 28 * 4 * 128 * 2 * 2 == 57_344  # layers x KV heads x head dim x K,V x 2
    (found,) = sizing.fits(model, "H100-80GB", 80, need_tokens=8192)
    # 80 GiB x 0.9 - 2 GiB - 15,231,233,024 = 59,930,694,656 bytes; a block of 16 tokens is 917,504 bytes
    # -> 65,319 blocks = 1,045,104 tokens; a 4096-token sequence takes 256 blocks, an 8192-token one 512
    assert found.tensor_parallel == 1
    assert found.kv_tokens == 65_319 * 16 == 1_045_104
    assert found.kv_cache_bytes == 65_319 * 917_504
    assert (found.max_num_seqs(4096), found.max_num_seqs(8192)) == (255, 127)


def test_a_70b_model_is_sharded_over_the_fewest_gpus_that_leave_kv_cache() -> None:
    """Llama-3-70B: 70.55B parameters; TP 2 on 80 GiB GPUs (then 4, 8); at TP 8 each GPU keeps one of 8 KV heads."""
    model = sizing.load_model(LLAMA_70B)
    assert model.parameters == 70_553_706_496
    assert model.kv_bytes_per_token(8) == 80 * 1 * 128 * 2 * 2
    found = sizing.fits(model, "A100-80GB", 80, need_tokens=8192)
    assert [f.tensor_parallel for f in found] == [2, 4, 8]
    assert all(f.kv_tokens >= 8192 for f in found)
    assert sizing.fits(model, "tiny", 16, need_tokens=8192)[0].tensor_parallel is None  # 8 x 16 GiB is too little


def test_a_context_longer_than_the_models_has_no_max_num_seqs() -> None:
    """Llama-2-7B's context is 4096: its max_num_seqs at 8192 is None (shown as "-")."""
    model = sizing.load_model(ROOT / "benchmarks" / "sizing" / "Llama-2-7b-hf.json")
    (found,) = sizing.fits(model, "A100-80GB", 80, need_tokens=4096)
    assert found.max_num_seqs(4096) and found.max_num_seqs(8192) is None


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ({"hidden_size": 4096}, "missing or not a positive integer: intermediate_size"),
        ({**json.loads(QWEN.read_text()), "torch_dtype": "int3"}, "torch_dtype 'int3'"),
        ({**json.loads(QWEN.read_text()), "num_local_experts": 8}, "mixture-of-experts"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_config_it_cannot_size_is_refused_with_what_is_wrong(tmp_path: Path, config: object, said: str) -> None:
    """A config missing a field, with an unknown dtype, of an MoE model, or not an object: SizingError saying so."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(sizing.SizingError, match=said):
        sizing.load_model(path)


def test_the_readme_table_is_the_scripts_output(capsys: pytest.CaptureFixture[str]) -> None:
    """deploy/README.md's sizing table is exactly what `python benchmarks/gpu_sizing.py` prints (not typed in)."""
    assert sizing.main([]) == 0
    printed = capsys.readouterr().out.strip()
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "python benchmarks/gpu_sizing.py" in readme
    assert printed in readme
