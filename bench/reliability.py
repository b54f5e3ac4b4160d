"""How `fewtune serve` answers a larger property-based fuzz: schemathesis, from the schema the
server serves at /openapi.json (with its token), against a real server on a tiny random Llama
(tests/server_fixtures.py), valid and invalid requests to every operation. The same driver as
tests/test_api_schema_fuzz.py (tests/schema_fuzz.py), with more examples.

Prints a table per operation and in all: inputs tried, handled cleanly (answered as the schema
says, no 5xx), 5xx, crashes (no answer, or a traceback in the server's log), and each failed
check. Results: docs/benchmarks.md, "Reliability".

`--cli N` adds what users hand the CLI and the import readers: tests/test_fuzz_input.py run with
N generated cases per test (its explicit cases, the defects found by hand, run too). Handled
cleanly: a result or one `Error:` line with exit 1 and nothing stored; failed: anything else.

    .venv/bin/python bench/reliability.py --examples 100
    .venv/bin/python bench/reliability.py --examples 0 --cli 300     # the CLI only
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
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


def cli_fuzz(examples: int) -> str:
    """Run tests/test_fuzz_input.py with `examples` generated cases per test; a table of them."""
    test_file = ROOT / "tests" / "test_fuzz_input.py"
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)]
        + ["--hypothesis-show-statistics"],
        cwd=ROOT,
        env={**os.environ, "FEWTUNE_FUZZ_EXAMPLES": str(examples)},
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    rows = [
        "| test | generated cases | handled cleanly | failed (traceback, not one line, or data stored) |",
        "|---|---|---|---|",
    ]
    total = [0, 0, 0]
    blocks = re.findall(r"::(\w+):\n(.*?)(?=\n\S|\Z)", run.stdout, flags=re.S)
    for name, block in blocks:
        passing = sum(int(n) for n in re.findall(r"(\d+) passing", block))
        failing = sum(int(n) for n in re.findall(r"(\d+) failing", block))
        rows.append(f"| `{name}` | {passing + failing} | {passing} | {failing} |")
        total = [total[0] + passing + failing, total[1] + passing, total[2] + failing]
    explicit = len(re.findall(r"^@example\(", test_file.read_text(), flags=re.M))
    rows.append(
        f"| all ({explicit} explicit cases besides) | {total[0]} | {total[1]} | {total[2]} |"
    )
    verdict = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-500:]
    return "\n".join(rows) + f"\n\npytest: {verdict} ({seconds:.0f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100, help="valid and invalid, each")
    parser.add_argument("--max-tokens-limit", type=int, default=8)
    parser.add_argument("--cli", type=int, default=0, help="generated cases per CLI fuzz test")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cli:
        print(cli_fuzz(args.cli), end="\n\n", flush=True)
    if not args.examples:
        return
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
