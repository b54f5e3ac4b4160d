"""The shipped number-words data: demo assistant examples and the benchmark's pool/test split."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_number_words.py"
DEMO_JSONL = ROOT / "assistants/demo/numbers.jsonl"
DEMO_JSON = ROOT / "assistants/demo/numbers.json"
POOL = ROOT / "bench/data/numbers_pool.jsonl"
TEST = ROOT / "bench/data/numbers_test.jsonl"
FILES = [DEMO_JSONL, DEMO_JSON, POOL, TEST]


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def scripts_of(text: str) -> set[str]:
    """Unicode script-ish names of the letters in text ('LATIN', 'CYRILLIC', 'CJK', ...)."""
    return {unicodedata.name(c).split()[0] for c in text if c.isalpha()}


def test_files_exist_and_are_small() -> None:
    for path in FILES:
        assert path.is_file(), path
    assert sum(p.stat().st_size for p in FILES) < 300_000


@pytest.mark.parametrize("path", [POOL, TEST])
def test_benchmark_rows_are_well_formed(path: Path) -> None:
    rows = read_jsonl(path)
    for row in rows:
        assert set(row) == {"input", "output", "lang"}
        assert row["input"] == row["input"].strip() and row["input"]
        assert row["output"].isdigit() and row["output"] == str(int(row["output"]))
        assert 0 <= int(row["output"]) <= 100
    assert len({r["input"] for r in rows}) == len(rows)


def test_languages_cover_several_scripts() -> None:
    rows = read_jsonl(POOL) + read_jsonl(TEST)
    assert len({r["lang"] for r in rows}) >= 8
    scripts = set().union(*(scripts_of(r["input"]) for r in rows))
    assert "LATIN" in scripts
    assert len(scripts - {"LATIN"}) >= 2, scripts


def test_pool_and_test_are_disjoint_and_sized() -> None:
    pool, test = read_jsonl(POOL), read_jsonl(TEST)
    assert len(test) >= 300
    assert len(pool) >= 800
    assert not {r["input"] for r in pool} & {r["input"] for r in test}
    pairs = lambda rows: {(r["lang"], r["output"]) for r in rows}  # noqa: E731
    assert not pairs(pool) & pairs(test)
    # Stratified: every language is on both sides.
    assert {r["lang"] for r in pool} == {r["lang"] for r in test}


def test_demo_examples_come_from_the_pool_only() -> None:
    demo = read_jsonl(DEMO_JSONL)
    assert 150 <= len(demo) <= 300
    for row in demo:
        assert set(row) == {"input", "output"}
        assert row["output"].isdigit() and 0 <= int(row["output"]) <= 100
    inputs = [r["input"] for r in demo]
    assert len(set(inputs)) == len(inputs)
    pool = {r["input"]: r for r in read_jsonl(POOL)}
    test_inputs = {r["input"] for r in read_jsonl(TEST)}
    assert not set(inputs) & test_inputs
    assert all(pool[r["input"]]["output"] == r["output"] for r in demo)
    assert len({pool[i]["lang"] for i in inputs}) >= 8
    assert len(set().union(*(scripts_of(i) for i in inputs)) - {"LATIN"}) >= 2


def test_demo_definition() -> None:
    definition = json.loads(DEMO_JSON.read_text(encoding="utf-8"))
    assert definition["name"] == "numbers"
    assert definition["k"] == 4 and definition["selector"] == "similarity"
    assert "digits" in definition["instructions"] and definition["description"]
    assert 1 <= len(definition["starters"]) <= 4
    test_inputs = {r["input"] for r in read_jsonl(TEST)}
    assert not set(definition["starters"]) & test_inputs


def test_script_regenerates_identical_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for path in FILES:
        regenerated = tmp_path / path.relative_to(ROOT)
        assert regenerated.read_bytes() == path.read_bytes(), path


def test_script_reports_an_unwritable_folder_in_one_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out-dir", str(blocker)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Cannot write the number-words files")
    assert "Traceback" not in result.stderr
