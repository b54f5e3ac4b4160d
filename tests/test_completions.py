"""`fewtune serve`'s /v1/completions and /v1/apply-template with the real openai client, checked
against transformers run directly on the same tiny model (and the same LoRA adapter)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from server_fixtures import make_adapter, make_tiny_model, serving, write_settings

from training.serving.completions import listed_tokens
from training.serving.engine import PreparedChat, PreparedText, Sampling

TOKEN = "completions-token"
ADAPTER = "ft:tiny-llama:scorer:ftjob-abc123"
TEXT = "The café serves naïve 日本 tea, and a plain answer."
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    home = tmp_path_factory.mktemp("home")
    # fp32 weights in the fast decoder: its greedy text is transformers' greedy text
    settings = write_settings(home, model=str(tiny_model), int8_weights=False)
    make_adapter(tiny_model, settings.adapters_path, ADAPTER)
    with serving(settings, TOKEN) as (base_url, app):
        yield base_url, settings


@pytest.fixture(scope="module")
def reference(served, tiny_model: Path) -> dict[str, Any]:
    """The models themselves, run with transformers: the base and the adapter applied."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tuned = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = PeftModel.from_pretrained(tuned, str(served[1].adapters_path / ADAPTER)).eval()
    return {
        "tiny-llama": base,
        ADAPTER: tuned,
        "tokenizer": AutoTokenizer.from_pretrained(tiny_model),
    }


@pytest.fixture
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0], api_key=TOKEN, max_retries=0, timeout=60)


def post(served, path: str, body: Any, token: str | None = TOKEN) -> httpx.Response:
    root = served[0].removesuffix("/v1")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(root + path, json=body, headers=headers, timeout=60)


def logprobs_of(model: Any, ids: list[int]) -> list[float]:
    """log P(ids[i] | ids[:i]) for i >= 1, from log_softmax of the model's logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    rows = torch.log_softmax(logits, dim=-1)
    return [float(rows[i - 1, ids[i]]) for i in range(1, len(ids))]


def greedy_ids(model: Any, tokenizer: Any, text: str, new: int) -> list[int]:
    """The prompt's tokens and transformers' greedy continuation of `new` tokens at most."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=new, do_sample=False, top_p=None
        )
    return [int(i) for i in out[0]]


def greedy_text(model: Any, tokenizer: Any, text: str, new: int) -> str:
    prompt = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = greedy_ids(model, tokenizer, text, new)
    return str(tokenizer.decode(ids[prompt:], skip_special_tokens=True))


@pytest.mark.parametrize("model", ["tiny-llama", ADAPTER])
def test_echo_scores_the_prompt_as_transformers_does(
    client: openai.OpenAI, reference: dict[str, Any], model: str
) -> None:
    reply = client.completions.create(model=model, prompt=TEXT, echo=True, logprobs=1, max_tokens=0)
    assert reply.object == "text_completion"
    assert reply.model == model
    choice = reply.choices[0]
    assert choice.text == TEXT
    assert choice.finish_reason == "length"
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.text_offset
    ids = reference["tokenizer"](TEXT, add_special_tokens=False)["input_ids"]
    assert len(lp.tokens) == len(ids)
    assert "".join(lp.tokens) == TEXT
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(ids))]
    assert lp.token_logprobs[0] is None
    expected = logprobs_of(reference[model], ids)
    got = lp.token_logprobs[1:]
    assert all(abs(g - e) < 1e-4 for g, e in zip(got, expected, strict=True)), (got, expected)
    assert lp.top_logprobs is not None and lp.top_logprobs[0] is None
    for token, logprob, top in zip(lp.tokens[1:], got, lp.top_logprobs[1:], strict=True):
        assert top is not None and 1 <= len(top) <= 2
        assert max(top.values()) >= logprob - 1e-6
        assert top[token] == pytest.approx(logprob, abs=1e-6)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(ids), 0)


def test_adapter_scores_differ_from_base(client: openai.OpenAI) -> None:
    def scores(model: str) -> list[float | None]:
        reply = client.completions.create(
            model=model, prompt=TEXT, echo=True, logprobs=0, max_tokens=0
        )
        assert reply.choices[0].logprobs is not None
        return list(reply.choices[0].logprobs.token_logprobs or [])

    base, tuned = scores("tiny-llama"), scores(ADAPTER)
    assert len(base) == len(tuned)
    assert max(abs(b - t) for b, t in zip(base[1:], tuned[1:], strict=True)) > 1e-2  # type: ignore[operator]
    assert scores("tiny-llama") == base  # the adapter left the base as it was


def test_token_id_prompt_scores_like_its_text(client: openai.OpenAI, reference) -> None:
    ids = reference["tokenizer"](TEXT, add_special_tokens=False)["input_ids"]
    by_text = client.completions.create(
        model="tiny-llama", prompt=TEXT, echo=True, logprobs=0, max_tokens=0
    )
    by_ids = client.completions.create(
        model="tiny-llama", prompt=ids, echo=True, logprobs=0, max_tokens=0
    )
    assert by_ids.choices[0].text == TEXT
    assert by_ids.choices[0].logprobs == by_text.choices[0].logprobs


@pytest.mark.parametrize("model", ["tiny-llama", ADAPTER])
def test_greedy_completion_is_transformers_greedy(
    client: openai.OpenAI, reference: dict[str, Any], model: str
) -> None:
    expected = greedy_text(reference[model], reference["tokenizer"], TEXT, 8)
    reply = client.completions.create(model=model, prompt=TEXT, max_tokens=8, temperature=0)
    choice = reply.choices[0]
    assert choice.text == expected
    assert choice.logprobs is None
    assert reply.usage is not None and 1 <= reply.usage.completion_tokens <= 8
    stream = client.completions.create(
        model=model, prompt=TEXT, max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason


def test_generated_tokens_have_logprobs_under_the_model(
    client: openai.OpenAI, reference: dict[str, Any]
) -> None:
    reply = client.completions.create(
        model=ADAPTER, prompt=TEXT, max_tokens=6, temperature=0, logprobs=2, echo=True
    )
    choice = reply.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.text_offset
    assert choice.text.startswith(TEXT)
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    ids = greedy_ids(reference[ADAPTER], reference["tokenizer"], TEXT, 6)
    assert len(lp.tokens) == len(ids)  # the end token too, where it came
    expected = logprobs_of(reference[ADAPTER], ids)
    got = lp.token_logprobs[1:]
    assert all(abs(g - e) < 1e-4 for g, e in zip(got, expected, strict=True)), (got, expected)
    plain = client.completions.create(
        model=ADAPTER, prompt=TEXT, max_tokens=6, temperature=0, logprobs=2
    )
    generated = plain.choices[0].logprobs
    assert generated is not None and generated.tokens is not None
    assert "".join(generated.tokens) == plain.choices[0].text
    assert generated.text_offset is not None and generated.text_offset[0] == 0
    assert generated.token_logprobs == lp.token_logprobs[len(lp.tokens) - len(generated.tokens) :]


def test_a_stop_string_cuts_the_text_and_its_tokens(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny-llama", prompt=TEXT, max_tokens=8, temperature=0)
    text = whole.choices[0].text
    stop = text[len(text) // 2 :][:2]
    assert stop.strip()
    reply = client.completions.create(
        model="tiny-llama", prompt=TEXT, max_tokens=8, temperature=0, stop=stop, logprobs=0
    )
    cut = reply.choices[0]
    assert cut.text == text[: text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.logprobs is not None and cut.logprobs.tokens is not None
    assert cut.logprobs.text_offset is not None
    assert all(at < len(cut.text) for at in cut.logprobs.text_offset)
    assert "".join(cut.logprobs.tokens).startswith(cut.text)


def test_echo_without_logprobs_returns_the_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=ADAPTER, prompt=TEXT, echo=True, max_tokens=0)
    assert reply.choices[0].text == TEXT
    assert reply.choices[0].logprobs is None
    assert reply.usage is not None and reply.usage.completion_tokens == 0


def test_lm_evaluation_harness_request_scores_the_continuation(
    client: openai.OpenAI, reference: dict[str, Any]
) -> None:
    """local-completions' loglikelihood request: token ids, echo, max_tokens 1, logprobs 1; it
    reads token_logprobs[ctxlen:-1] (the last listed token is the generated one)."""
    tokenizer = reference["tokenizer"]
    context = tokenizer("The café serves", add_special_tokens=False)["input_ids"]
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert ids[: len(context)] == context
    reply = client.completions.create(
        model=ADAPTER, prompt=[ids], echo=True, max_tokens=1, logprobs=1, temperature=0, seed=1
    )
    lp = reply.choices[0].logprobs
    assert lp is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
    assert len(lp.token_logprobs) == len(ids) + 1
    got = sum(lp.token_logprobs[len(context) : -1])  # type: ignore[arg-type]
    expected = logprobs_of(reference[ADAPTER], ids)[len(context) - 1 :]
    assert got == pytest.approx(sum(expected), abs=1e-3)
    assert all(top for top in lp.top_logprobs[1:])


def test_listed_tokens_keep_the_end_token_and_cut_at_a_stop_string() -> None:
    prompt = PreparedText(PreparedChat("m", (), Sampling(), (5, 6)), "ab", 0)
    pieces = ["a", "b", "x", "yz", ""]  # two prompt tokens, three generated (the end token "")
    assert listed_tokens(pieces, 2, prompt, True, "xyz") == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 5])
    assert listed_tokens(pieces, 2, prompt, False, "xyz") == ([2, 3, 4], [0, 1, 3])
    assert listed_tokens(pieces, 2, prompt, False, "xy") == ([2, 3], [0, 1])  # stop string "z"


def test_a_list_of_prompts_gets_one_choice_each_in_order(client: openai.OpenAI) -> None:
    prompts = [TEXT, "Another prompt entirely"]
    singles = [
        client.completions.create(model="tiny-llama", prompt=p, max_tokens=5, temperature=0)
        for p in prompts
    ]
    both = client.completions.create(
        model="tiny-llama", prompt=prompts, max_tokens=5, temperature=0
    )
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.text for c in both.choices] == [s.choices[0].text for s in singles]
    assert both.usage is not None
    assert both.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles if s.usage)
    stream = client.completions.create(
        model="tiny-llama", prompt=prompts, max_tokens=5, temperature=0, stream=True, echo=True
    )
    texts = ["", ""]
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [p + s.choices[0].text for p, s in zip(prompts, singles, strict=True)]


def test_stream_ends_with_done_and_usage(served) -> None:
    body = {
        "model": "tiny-llama",
        "prompt": TEXT,
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = post(served, "/v1/completions", body).text.strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2].removeprefix("data: "))
    assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1


def test_apply_template_is_the_prompt_chat_uses(
    client: openai.OpenAI, served, reference: dict[str, Any]
) -> None:
    prompt = post(served, "/v1/apply-template", {"messages": MESSAGES}).json()["prompt"]
    tokenizer = reference["tokenizer"]
    assert prompt == tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=False
    )
    assert post(served, "/apply-template", {"messages": MESSAGES, "model": ADAPTER}).json() == {
        "prompt": prompt
    }
    for model in ("tiny-llama", ADAPTER):
        chat = client.chat.completions.create(
            model=model,
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=8,
        )
        text = client.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=8)
        assert chat.usage is not None and text.usage is not None
        assert text.usage.prompt_tokens == chat.usage.prompt_tokens
        assert text.choices[0].text == chat.choices[0].message.content


def test_scoring_an_answer_to_chat_messages(client: openai.OpenAI, served, reference) -> None:
    prompt = post(served, "/v1/apply-template", {"messages": MESSAGES}).json()["prompt"]
    answer = "Hello there, friend."
    reply = client.completions.create(
        model=ADAPTER, prompt=prompt + answer, echo=True, logprobs=0, max_tokens=0
    )
    lp = reply.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.text_offset and lp.token_logprobs
    mine = [i for i, at in enumerate(lp.text_offset) if at >= len(prompt)]
    assert "".join(lp.tokens[i] for i in mine) == answer
    tokenizer = reference["tokenizer"]
    ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
    expected = logprobs_of(reference[ADAPTER], ids)
    total = sum(lp.token_logprobs[i] for i in mine)  # type: ignore[misc]
    assert total == pytest.approx(sum(expected[i - 1] for i in mine), abs=1e-3)


LONG = [1] * 1100  # the tiny model reads 1,024 tokens


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"logprobs": 6, "echo": True, "max_tokens": 0}, 400, "logprobs"),
        ({"logprobs": -1}, 400, "logprobs"),
        ({"max_tokens": -1}, 400, "max_tokens"),
        ({"max_tokens": 0}, 400, "echo"),
        ({"n": 2}, 400, "n=1"),
        ({"best_of": 3}, 400, "best_of"),
        ({"suffix": "tail"}, 400, "suffix"),
        ({"logit_bias": {"5": 10}}, 400, "logit_bias"),
        ({"stream": True, "logprobs": 1}, 400, "stream"),
        ({"prompt": ""}, 400, "empty"),
        ({"prompt": []}, 400, "prompt"),
        ({"prompt": 7}, 400, "prompt"),
        ({"prompt": [1, "a"]}, 400, "prompt"),
        ({"prompt": [10**9]}, 400, "vocabulary"),
        ({"prompt": ["fine", ""]}, 400, "Prompt 1: The prompt is empty"),
        ({"prompt": LONG, "echo": True, "max_tokens": 0}, 400, "1024"),
        ({"prompt": [1] * 1024, "max_tokens": 1}, 400, "room for one more"),
        ({"temperature": 3}, 400, "temperature"),
        ({"model": "ft:nobody:x"}, 404, "does not exist"),
    ],
)
def test_bad_completion_requests_get_one_sentence(
    served, body: dict[str, Any], status: int, words: str
) -> None:
    response = post(served, "/v1/completions", {"model": "tiny-llama", "prompt": TEXT, **body})
    assert response.status_code == status
    message = response.json()["error"]["message"]
    assert words in message
    assert "\n" not in message and message.endswith(".")


@pytest.mark.parametrize(
    ("body", "status"),
    [({"messages": []}, 400), ({}, 400), ({"messages": MESSAGES, "model": "nope"}, 404)],
)
def test_bad_apply_template_requests(served, body: dict[str, Any], status: int) -> None:
    response = post(served, "/v1/apply-template", body)
    assert response.status_code == status
    assert response.json()["error"]["message"].endswith(".")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/apply-template", "/apply-template"])
def test_both_need_the_token(served, path: str) -> None:
    body = {"model": "tiny-llama", "prompt": TEXT, "messages": MESSAGES}
    assert post(served, path, body, token=None).status_code == 401
    assert post(served, path, body, token="wrong").status_code == 401
