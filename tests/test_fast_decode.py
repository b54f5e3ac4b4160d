"""The lean CPU decoder: int8 kernels and FastLlama reproduce transformers' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from server_fixtures import make_adapter, make_tiny_model

from training.serving.fast_llama import FastLlama, UnsupportedAdapter, supports
from training.serving.int8_kernels import Int8Weight, kernel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM

    folder = make_tiny_model(tmp_path_factory.mktemp("fast") / "tiny")
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.mark.parametrize(("out", "inp", "rows"), [(96, 64, 1), (40, 1536, 3), (7, 40, 2)])
def test_int8_weight_matches_dequantized_matmul(out: int, inp: int, rows: int) -> None:
    torch.manual_seed(0)
    weight = Int8Weight(torch.randn(out, inp))
    x = torch.randn(rows, inp)
    reference = F.linear(x, weight.q.float()) * weight.scale
    got = weight(x)
    tolerance = 0.02 * reference.abs().max()  # activations quantized in blocks of 32
    assert (got - reference).abs().max() <= tolerance


def test_kernel_is_built_here() -> None:
    # This machine has AVX2 and a C compiler: the fast path must really be in use.
    assert kernel() is not None


def test_fast_llama_reproduces_transformers(tiny) -> None:
    _, model = tiny
    assert supports(model)
    ids = list(range(100, 700))  # more than the first cache allocation (512): it must grow
    with torch.inference_mode():
        reference = model(torch.tensor([ids])).logits[0]
    decoder = FastLlama(model)
    decoder.start(0)
    logits = decoder.prefill(0, ids[:550], None)
    assert torch.allclose(logits, reference[549], atol=1e-3)
    for position in range(550, 560):
        logits = decoder.decode([ids[position]], [None])[0]
    assert torch.allclose(logits, reference[559], atol=1e-3)


def test_fast_llama_applies_lora_like_peft(tiny, tmp_path: Path) -> None:
    from peft import PeftModel

    folder, model = tiny
    make_adapter(folder, tmp_path, "plain", r=4)
    make_adapter(folder, tmp_path, "dora", use_dora=True)
    ids = list(range(200, 230))
    peft_model = PeftModel.from_pretrained(model, str(tmp_path / "plain")).eval()
    with torch.inference_mode():
        reference = peft_model(torch.tensor([ids])).logits[0, -1]
    decoder = FastLlama(peft_model)  # reads the base weights under peft's wrappers
    decoder.start(0)
    assert torch.allclose(
        decoder.prefill(0, ids, decoder.load_adapter(tmp_path / "plain")), reference, atol=1e-3
    )
    with pytest.raises(UnsupportedAdapter):
        decoder.load_adapter(tmp_path / "dora")
    peft_model.unload()
