"""schemathesis against a running `fewtune serve`, driven by Hypothesis here: every operation of
the schema the server serves, valid and invalid requests, each answer checked by schemathesis's
checks and tallied (tests/test_api_schema_fuzz.py bounded, bench/reliability.py larger).

schemathesis's own pytest plugin (`schema.parametrize()`) fails under pytest 9 (it sets a
`_nodeid` pytest's Function no longer has), so the cases are drawn from each operation's
strategy with `@given` and called with `case.call`, then `case.validate_response`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

# Valid data must be accepted (a 2xx, or 404 for an id or model that does not exist), except
# where validity depends on more than the schema can say: an upload's file must be chat JSONL,
# and a job names a training file that must exist.
CONFIG = """
headers = {{ Authorization = "Bearer {token}" }}

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "404", "429"]

[[operations]]
include-path-regex = "^/v1/(files|fine_tuning/jobs)$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "429"]
"""


@dataclass
class Tally:
    """What a fuzz run tried and how the server answered."""

    tried: int = 0
    clean: int = 0  # answered as the schema says, and not a 5xx
    server_errors: int = 0  # 5xx
    crashes: int = 0  # no answer (connection dropped) or a traceback in the server's log
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)  # operation -> counts
    mismatches: list[str] = field(default_factory=list)  # one line per failed check

    def add(self, other: Tally) -> None:
        self.tried += other.tried
        self.clean += other.clean
        self.server_errors += other.server_errors
        self.crashes += other.crashes
        for label, counts in other.statuses.items():
            mine = self.statuses.setdefault(label, {})
            for status, count in counts.items():
                mine[status] = mine.get(status, 0) + count
        self.mismatches += other.mismatches


class TracebackCounter(logging.Handler):
    """Counts log records that carry a traceback (the server's `_unexpected` handler logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1


def narrowed(schema: dict[str, Any], model: str) -> dict[str, Any]:
    """The schema with `model` fields naming the served model, so that valid requests reach
    generation rather than the 404 of an unknown model (invalid ones still name others), and
    at most 4 prompts in a completion, so that the fuzz stays bounded in time (256 prompts of
    a few tokens each take seconds)."""
    narrow = copy.deepcopy(schema)
    models = narrow["components"]["schemas"]
    for component in models.values():
        if "model" in component.get("properties", {}):
            component["properties"]["model"] = {"type": "string", "enum": [model]}
    for form in models["CompletionRequest"]["properties"]["prompt"]["anyOf"]:
        if "maxItems" in form:
            form["maxItems"] = 4
    return narrow


def load_schema(base_url: str, token: str, model: str) -> Any:
    """The server's own schema, asked with the token, ready for schemathesis."""
    import schemathesis

    root = base_url.removesuffix("/v1")
    served = httpx.get(f"{root}/openapi.json", headers={"Authorization": f"Bearer {token}"})
    served.raise_for_status()
    config = schemathesis.Config.from_str(CONFIG.format(token=token))
    schema = schemathesis.openapi.from_dict(narrowed(served.json(), model), config=config)
    schema.config.base_url = root
    return schema


def fuzz(schema: Any, max_examples: int) -> Tally:
    """`max_examples` valid and as many invalid requests per operation; the tally of answers.
    The token travels in the schema's config (load_schema), so the checks know it was sent."""
    from schemathesis import GenerationMode

    tally = Tally()
    counter = TracebackCounter()
    logging.getLogger().addHandler(counter)
    try:
        for result in schema.get_all_operations():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                tally.add(_fuzz_one(result.ok(), mode, max_examples, counter))
    finally:
        logging.getLogger().removeHandler(counter)
    return tally


def _fuzz_one(operation: Any, mode: Any, max_examples: int, counter: TracebackCounter) -> Tally:
    import requests

    label = f"{operation.method.upper()} {operation.path}"
    one = Tally(statuses={label: {}})

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: count, not minimise
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        one.tried += 1
        before = counter.count
        try:
            response = case.call(timeout=60)
        except requests.RequestException as error:
            one.crashes += 1
            one.mismatches.append(f"{label}: no answer ({error})")
            return
        counts = one.statuses[label]
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        clean = response.status_code < 500
        one.server_errors += not clean
        try:
            case.validate_response(response)
        except (AssertionError, BaseExceptionGroup) as failure:  # the checks that failed
            clean = False
            failures = getattr(failure, "exceptions", (failure,))
            what = "; ".join(" ".join(str(f).split())[:400] for f in failures)
            one.mismatches.append(
                f"{label} ({mode.value}): {what}: {response.status_code} {response.text[:200]}"
            )
        if counter.count > before:
            one.crashes += counter.count - before
            clean = False
        one.clean += clean

    with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (GET /v1/models)
        run()
    return one
