"""How `fewtune serve` answers a larger property-based fuzz: schemathesis, from the schema the
server serves at /openapi.json (with its token), against a real server on a tiny random Llama
(tests/server_fixtures.py), valid and invalid requests to every operation. The same driver as
tests/test_api_schema_fuzz.py (tests/schema_fuzz.py), with more examples.

Prints a table per operation and in all: inputs tried, handled cleanly (answered as the schema
says, no 5xx), 5xx, crashes (no answer, or a traceback in the server's log), and each failed
check. Results: docs/benchmarks.md, "Reliability".

    .venv/bin/python bench/reliability.py --examples 100
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: the tiny model, the fuzz driver

from schema_fuzz import Tally, fuzz, load_schema  # noqa: E402
from server_fixtures import make_tiny_model, serving, write_settings  # noqa: E402

TOKEN = "reliability-token"
MODEL = "tiny-llama"


def table(tally: Tally) -> str:
    rows = ["| operation | answers (status: count) |", "|---|---|"]
    for label, counts in tally.statuses.items():
        shown = ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
        rows.append(f"| `{label}` | {shown or 'nothing to send'} |")
    rows += [
        "",
        "| inputs tried | handled cleanly | 5xx | crashes |",
        "|---|---|---|---|",
        f"| {tally.tried} | {tally.clean} | {tally.server_errors} | {tally.crashes} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100, help="valid and invalid, each")
    parser.add_argument("--max-tokens-limit", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as folder:
        tiny = make_tiny_model(Path(folder) / MODEL)
        settings = write_settings(
            Path(folder) / "home", model=str(tiny), max_tokens_limit=args.max_tokens_limit
        )
        with serving(settings, TOKEN) as (base_url, _app):
            started = time.monotonic()
            tally = fuzz(load_schema(base_url, TOKEN, MODEL), max_examples=args.examples)
            seconds = time.monotonic() - started
    print(table(tally))
    load = os.getloadavg()[0]
    print(f"\n{args.examples} examples per operation and mode, {seconds:.0f} s, load {load:.1f}")
    for line in tally.mismatches:
        print("failed:", line)


if __name__ == "__main__":
    main()
