"""The likelihood metric against the real `fewtune serve` (a tiny random Llama and a LoRA
adapter), through the providers' openai client as the gate asks it: the mean log-probability
per token of an answer after a chat, equal to what transformers (and peft) compute from the
chat template directly."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import torch
from server_fixtures import make_adapter, make_tiny_model, serving, write_settings

from assistants.likelihood import mean_log_prob
from assistants.providers import ModelRef, Providers
from storage.settings import load_settings

ADAPTER = "ft:tiny-llama:support:ftjob-1"
MESSAGES = [
    {"role": "system", "content": "Answer the customer."},
    {"role": "user", "content": "When do you open?"},
]
ANSWER = "Hello! We open at 9 every morning. Best, the team"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tiny = make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")
    settings = write_settings(tmp_path_factory.mktemp("serve-home"), model=str(tiny))
    make_adapter(tiny, settings.adapters_path, ADAPTER)
    token = secrets.token_urlsafe(8)
    with serving(settings, token) as (url, _):
        yield url, token, tiny, settings


def direct(model: Any, tokenizer: Any, messages: list[dict[str, str]], answer: str) -> float:
    """The mean log-probability of the answer's tokens, from the model's own logits."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    with torch.no_grad():
        rows = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    scores = [
        float(rows[i - 1, ids[i]])
        for i, (start, _) in enumerate(encoded["offset_mapping"])
        if i > 0 and start >= len(prompt)
    ]
    return sum(scores) / len(scores)


@pytest.mark.slow
async def test_the_served_likelihood_equals_transformers_for_base_and_adapter(
    served, fewtune_home, monkeypatch
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    url, token, tiny, settings = served
    monkeypatch.setenv("GATE_SERVE_TOKEN", token)
    (fewtune_home / "fewtune.toml").write_text(
        f'[providers.gpu]\nbase_url = "{url}"\napi_key_env = "GATE_SERVE_TOKEN"\n'
        "max_retries = 0\ntimeout = 60\n"
    )
    providers = Providers(load_settings(fewtune_home))
    try:
        base = await mean_log_prob(providers, ModelRef("gpu", "tiny-llama"), MESSAGES, ANSWER)
        tuned = await mean_log_prob(providers, ModelRef("gpu", ADAPTER), MESSAGES, ANSWER)
    finally:
        await providers.close()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    assert base == pytest.approx(direct(model, tokenizer, MESSAGES, ANSWER), abs=1e-4)
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny), str(settings.adapters_path / ADAPTER)
    ).eval()
    assert tuned == pytest.approx(direct(adapted, tokenizer, MESSAGES, ANSWER), abs=1e-4)
    assert abs(tuned - base) > 1e-3  # the adapter changes the scores: each model is asked
