"""schemathesis against the real `fewtune serve` (a tiny random Llama), from the schema the server
itself serves at /openapi.json with its token: no input gets a 5xx or a traceback, and every
answer is one the schema documents (status, content type, headers, body); invalid data is
refused and valid data accepted (tests/test_api_schema.py checks the 401s and 405s route by
route).

Bounded: 6 valid and 6 invalid requests per operation, derandomised, no example database, so
every run tries the same inputs (bench/reliability.py runs a larger fuzz and reports the counts
in docs/benchmarks.md).
"""

from __future__ import annotations

import pytest
from schema_fuzz import fuzz, load_schema
from server_fixtures import make_tiny_model, serving, write_settings

pytest.importorskip("schemathesis")

TOKEN = "fuzz-token"
MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tiny = make_tiny_model(tmp_path_factory.mktemp("models") / MODEL)
    home = tmp_path_factory.mktemp("home")
    with serving(write_settings(home, model=str(tiny), max_tokens_limit=8), TOKEN) as (url, _):
        yield url


@pytest.mark.slow  # about 40-70 s on 2 loaded cores: most of it generating on the tiny model
def test_every_answer_is_what_the_schema_says(server: str) -> None:
    tally = fuzz(load_schema(server, TOKEN, MODEL), max_examples=6)
    assert tally.mismatches == []
    assert tally.server_errors == 0 and tally.crashes == 0
    assert tally.clean == tally.tried
    # The fuzz reached the model, not only the refusals in front of it.
    assert tally.statuses["POST /v1/chat/completions"].get(200, 0) > 0
    assert tally.statuses["POST /v1/completions"].get(200, 0) > 0
    assert tally.tried >= 100
