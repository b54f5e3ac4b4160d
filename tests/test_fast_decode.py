"""The lean CPU decoder: int8 kernels and FastLlama reproduce transformers' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from server_fixtures import make_adapter, make_tiny_model

from training.serving import kernels
from training.serving.fast_llama import (
    FUSED,
    FastLlama,
    LoraAdapter,
    UnsupportedAdapter,
    _Lora,
    _RowAdapters,
    supports,
)
from training.serving.kernels import Int8Weight, kernel


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


def test_each_row_is_the_same_whatever_the_batch() -> None:
    # What makes a chat's greedy answer the same alone and batched: the kernel computes each
    # row of x by itself, bit for bit, however many rows a call has (a decode batch, a chunk).
    torch.manual_seed(1)
    weight = Int8Weight(torch.randn(200, 576))
    x = torch.randn(64, 576)
    together = weight(x)
    assert torch.equal(together[:1], weight(x[:1]))
    assert torch.equal(together[5:13], weight(x[5:13]))


NO_ADAPTER = torch.zeros(1, len(FUSED), 3, dtype=torch.int64)  # a one-layer row with no adapter


def test_each_row_gets_its_own_adapters_update_in_one_call(monkeypatch) -> None:
    # The rows of a batch on two adapters of different ranks, and one on none; 100 outputs,
    # not a multiple of the kernel's 8 lanes.
    torch.manual_seed(2)
    n, k = 100, 72
    adapters = [
        LoraAdapter(layers=[{"o": _Lora(a=torch.randn(r, k), bt=torch.randn(r, n))}])
        for r in (4, 12)
    ]
    rows = [adapters[0], None, adapters[1], adapters[0]]
    x, base = torch.randn(4, k), torch.randn(4, n)
    got = _RowAdapters(rows, NO_ADAPTER).add(x, base.clone(), 0, "o")
    for t, adapter in enumerate(rows):
        want = base[t]
        if adapter is not None:
            lora = adapter.layers[0]["o"]
            want = want + (lora.a @ x[t]) @ lora.bt
        assert torch.allclose(got[t], want, atol=1e-4)
    # A row's sums are its own: alone it gets the same bits.
    alone = _RowAdapters([rows[2]], NO_ADAPTER).add(x[2:3], base[2:3].clone(), 0, "o")
    assert torch.equal(alone[0], got[2])
    # Without the compiled kernel, PyTorch does the same maths grouped by adapter.
    monkeypatch.setattr(kernels, "kernel", lambda: None)
    grouped = _RowAdapters(rows, NO_ADAPTER).add(x, base.clone(), 0, "o")
    assert torch.allclose(grouped, got, atol=1e-4)


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
    logits = decoder.step([], [], ids[:500])[1]  # a prompt in two chunks
    assert logits is not None and torch.allclose(logits, reference[499], atol=1e-3)
    logits = decoder.step([], [], ids[500:550])[1]
    assert logits is not None and torch.allclose(logits, reference[549], atol=1e-3)
    for position in range(550, 560):
        logits = decoder.step([ids[position]], [None])[0][0]
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
    logits = decoder.step([], [], ids, decoder.load_adapter(tmp_path / "plain"))[1]
    assert logits is not None and torch.allclose(logits, reference, atol=1e-3)
    with pytest.raises(UnsupportedAdapter):
        decoder.load_adapter(tmp_path / "dora")
    peft_model.unload()


def test_the_attention_kernel_matches_pytorch_and_keeps_each_row_to_itself(
    tiny, monkeypatch
) -> None:
    # Three rows of different lengths decode together; the same steps with the PyTorch
    # attention (masks for the unequal lengths) give the same logits, and a row decoded
    # alone gets the same bits as in the batch (with int8 weights, whose kernel is row-exact
    # too; PyTorch's fp32 matmul is not).
    _, model = tiny
    prompts = [list(range(300, 340)), list(range(400, 407)), list(range(500, 560))]

    def batch(int8: bool) -> torch.Tensor:
        decoder = FastLlama(model, int8=int8)
        for slot, prompt in enumerate(prompts):
            decoder.start(slot)
            decoder.step([7] * slot, [None] * slot, prompt)  # each row takes a token too
        return decoder.step([9, 9, 9], [None] * 3)[0]

    def alone(prompt: list[int], tokens: list[int]) -> torch.Tensor:
        decoder = FastLlama(model, int8=True)
        decoder.start(0)
        decoder.step([], [], prompt)
        for token in tokens:
            logits = decoder.step([token], [None])[0]
        return logits[0]

    assert torch.equal(batch(int8=True)[1], alone(prompts[1], [7, 9]))
    with_kernel = batch(int8=False)
    monkeypatch.setattr(kernels, "kernel", lambda: None)
    assert torch.allclose(batch(int8=False), with_kernel, atol=1e-4)


def test_one_step_runs_rows_of_different_lengths_adapters_and_a_chunk(tiny, tmp_path) -> None:
    folder, model = tiny
    make_adapter(folder, tmp_path, "a", seed=5)
    prompts = [list(range(300, 340)), list(range(400, 407)), list(range(500, 560))]
    decoder = FastLlama(model)
    lora = decoder.load_adapter(tmp_path / "a")
    adapters = [None, lora, lora]

    def alone(prompt: list[int], adapter, then: list[int]) -> torch.Tensor:
        decoder.start(0)
        logits = decoder.step([], [], prompt, adapter)[1]
        for token in then:
            logits = decoder.step([token], [adapter])[0][0]
        return logits

    expected = [alone(p, a, [7, 8]) for p, a in zip(prompts, adapters, strict=True)]
    # Each prompt is fed beside the rows already decoding, the last one in two chunks; rows
    # of different lengths and adapters share every step.
    decoder.start(0)
    decoder.step([], [], prompts[0])
    decoder.start(1)
    decoder.step([7], [None], prompts[1], lora)
    decoder.start(2)
    first = decoder.step([8, 7], [None, lora], prompts[2][:30], lora)[0][0]
    second = decoder.step([9, 8], [None, lora], prompts[2][30:], lora)[0][1]
    decoder.step([9, 9, 7], adapters)
    third = decoder.step([9, 9, 8], adapters)[0][2]
    for got, want in zip((first, second, third), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-4)
