"""The pure splitting of long replies into Discord messages."""

import random

import pytest

from bot.discord.split import DISCORD_LIMIT, split_message


def fences_balanced(part: str) -> bool:
    return sum(1 for line in part.split("\n") if line.strip().startswith("```")) % 2 == 0


def test_short_text_is_one_part():
    assert split_message("hello") == ["hello"]
    assert split_message("") == []
    assert split_message("x" * DISCORD_LIMIT) == ["x" * DISCORD_LIMIT]


def test_long_prose_splits_at_lines_and_keeps_every_word():
    lines = [f"line {i} " + "word " * 30 for i in range(200)]
    text = "\n".join(lines)
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p) <= DISCORD_LIMIT for p in parts)
    assert "\n".join(parts) == text  # split only at line ends: nothing lost or added


def test_code_block_is_closed_and_reopened_with_its_language():
    code = "\n".join(f"print({i})  # " + "x" * 40 for i in range(100))
    text = "Here:\n```python\n" + code + "\n```\nDone."
    parts = split_message(text)
    assert len(parts) > 1
    assert all(len(p) <= DISCORD_LIMIT for p in parts)
    assert all(fences_balanced(p) for p in parts)
    assert all(p.startswith("```python") for p in parts[1:-1])
    rebuilt = [line for p in parts for line in p.split("\n") if not line.startswith("```")]
    original = [line for line in text.split("\n") if not line.startswith("```")]
    assert rebuilt == original


def test_one_huge_line_is_cut_at_spaces():
    text = " ".join(["abcdefghij"] * 700)  # 7,699 characters, no newline
    parts = split_message(text)
    assert all(len(p) <= DISCORD_LIMIT for p in parts)
    assert "".join(parts) == text
    assert all(p.endswith(" ") for p in parts[:-1])


@pytest.mark.parametrize("seed", range(20))
def test_random_markdown_always_fits_and_balances(seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(rng.randint(50, 400)):
        kind = rng.random()
        if kind < 0.1:
            lines.append("```" + rng.choice(["", "py", "js"]))
        else:
            lines.append("y" * rng.randint(0, 300) + " z" * rng.randint(0, 1500))
    text = "\n".join(lines)
    parts = split_message(text, limit=DISCORD_LIMIT)
    assert all(0 < len(p) <= DISCORD_LIMIT for p in parts)
    if sum(1 for line in lines if line.startswith("```")) % 2 == 0:
        assert all(fences_balanced(p) for p in parts)


def test_tiny_limit_is_refused():
    with pytest.raises(ValueError):
        split_message("abc", limit=10)
