"""The likelihood of the owner's answers: the mean log-probability per token of a reference
answer given the prompt exactly as it is served (what a fine-tuning job's `valid_loss` measures,
with the sign turned).

Two calls on the provider, through its openai client: `POST /v1/apply-template` (a fewtune
server extension) turns the chat messages into the text the server feeds the model, generation
prompt added; the legacy `POST /v1/completions` with `echo`, `logprobs` and `max_tokens: 0`
scores that text followed by the answer, and the answer's tokens are those whose `text_offset`
is at or past the prompt's end. A provider without these (a hosted chat-only API answers 404 or
400) cannot score: `CannotScore` says so in one sentence.
"""

from __future__ import annotations

from typing import Any

from assistants.errors import ProviderError
from assistants.providers import ModelRef, Providers


class CannotScore(ProviderError):
    """The provider does not score texts (no /apply-template or /completions with logprobs)."""


async def mean_log_prob(
    providers: Providers, model: ModelRef, messages: list[dict[str, str]], answer: str
) -> float:
    """Mean log-probability per token of `answer` after `messages`, as `model` is served."""
    import openai

    client = await providers.client(model.provider)
    try:
        templated: Any = await client.post(
            "/apply-template", body={"messages": messages, "model": model.model}, cast_to=object
        )
        prompt = templated["prompt"]
        if not isinstance(prompt, str):
            raise TypeError("the prompt is not text")
        scored = await client.completions.create(
            model=model.model,
            prompt=prompt + answer,
            echo=True,
            logprobs=0,
            max_tokens=0,
            temperature=0.0,
        )
        logprobs = scored.choices[0].logprobs
        assert logprobs is not None
        values = [
            value
            for offset, value in zip(
                logprobs.text_offset or [], logprobs.token_logprobs or [], strict=False
            )
            if offset >= len(prompt) and value is not None
        ]
    except (openai.APIError, KeyError, TypeError, IndexError, AssertionError) as exc:
        reason = (
            f"HTTP {exc.status_code}"
            if isinstance(exc, openai.APIStatusError)
            else (type(exc).__name__)
        )
        raise CannotScore(
            f"The provider {model.provider!r} cannot score answers ({reason} on apply-template "
            "or completions with logprobs), so the likelihood was skipped."
        ) from exc
    if not values:
        raise CannotScore(
            f"The provider {model.provider!r} returned no token scores for the answer, so the "
            "likelihood was skipped."
        )
    return sum(values) / len(values)
