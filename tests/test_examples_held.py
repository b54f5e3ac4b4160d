"""Examples held in memory (storage/held.py `HeldExamples`): an assistant's example vectors read
once and searched exactly, read again after any write of its examples (in this process or
another), the index's own query for an assistant with more than `held_examples`, and a budget
that a new copy never thrashes. The stamps of both kinds of copy (examples and knowledge)."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import fewtune

from assistants import TERMINAL, Core
from storage.held import HeldExamples
from storage.settings import IndexSettings

NUMBERS = [
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("twenty-one", "21"),
    ("forty-two", "42"),
    ("seventy-one", "71"),
    ("cent", "100"),
    ("quarante-deux", "42"),
]


class CountingIndex:
    """A real index (the examples' or the knowledge's), counting whole reads and queries."""

    def __init__(self, index) -> None:
        self.reads = self.queries = self.counts = 0
        self._real = index

    def __call__(self) -> CountingIndex:
        return self

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def everything(self, assistant_id: int):
        self.reads += 1
        return self._real.everything(assistant_id)

    def query(self, *args, **kwargs):
        self.queries += 1
        return self._real.query(*args, **kwargs)

    def count(self, assistant_id: int) -> int:
        self.counts += 1
        return self._real.count(assistant_id)


def helper(core: Core, name: str = "numbers", pairs=NUMBERS):
    assistant = core.assistants.create(TERMINAL, name, "Write the number in digits.", k=2)
    for word, digits in pairs:
        core.examples.add(TERMINAL, name, word, digits)
    return assistant


def held_for(core: Core, **settings) -> tuple[HeldExamples, CountingIndex]:
    counting = CountingIndex(core.index())
    return HeldExamples(core.db, counting, IndexSettings(**settings)), counting


def chosen(core: Core, name: str, text: str) -> list[str]:
    assistant = core.assistants.get(TERMINAL, name)
    return [e.input for e in core.chat.compose(assistant, [], text).examples]


def test_the_search_is_exact_and_agrees_with_the_index(core):
    assistant = helper(core)
    held, counting = held_for(core)
    ids, stored = core.index().everything(assistant.id)
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    for text in ("seventy-two", "quarante", "three"):
        vector = core.embedder.embed_one(text)
        found = held.query(assistant.id, vector, 3)
        exact = np.argsort(-(unit @ (vector / np.linalg.norm(vector))), kind="stable")[:3]
        assert [h.example_id for h in found] == [ids[i] for i in exact]
        from_index = core.index().query(assistant.id, vector, 3)
        assert [h.example_id for h in found] == [h.example_id for h in from_index]
        for ours, theirs in zip(found, from_index, strict=True):
            assert ours.score == pytest.approx(theirs.score, abs=1e-5)
    with_vectors = held.query(assistant.id, core.embedder.embed_one("two"), 2, with_vectors=True)
    assert all(h.vector is not None and h.vector.shape == (384,) for h in with_vectors)
    assert counting.reads == 1 and counting.queries == 0


def test_read_once_then_again_only_after_a_write(core):
    helper(core)
    counting = CountingIndex(core.index())
    core.chat.held_examples.index = counting
    assert "seventy-one" in chosen(core, "numbers", "seventy-one")
    chosen(core, "numbers", "forty-three")
    assert counting.reads == 1

    core.examples.add(TERMINAL, "numbers", "ninety-nine", "99")
    assert chosen(core, "numbers", "ninety-nine")[0] == "ninety-nine"
    assert counting.reads == 2
    removed = next(e for e in core.examples.list(TERMINAL, "numbers") if e.input == "ninety-nine")
    core.examples.remove(TERMINAL, "numbers", removed.id)
    assert "ninety-nine" not in chosen(core, "numbers", "ninety-nine")
    assert counting.reads == 3 and counting.queries == 0


def test_an_assistant_with_more_than_held_examples_is_searched_by_the_index(core):
    assistant = helper(core)
    held, counting = held_for(core, held_examples=5)
    vector = core.embedder.embed_one("seventy-one")
    first = held.query(assistant.id, vector, 2)
    held.query(assistant.id, vector, 2)
    assert counting.reads == 0 and counting.queries == 2
    assert counting.counts == 1, "too many is remembered until its examples change"
    assert [h.example_id for h in first] == [
        h.example_id for h in core.index().query(assistant.id, vector, 2)
    ]
    off, counting = held_for(core, held_examples=0)
    off.query(assistant.id, vector, 2)
    assert counting.reads == counting.counts == 0 and counting.queries == 1


def test_a_new_copy_never_pushes_out_one_in_use(core):
    first = helper(core, "first", NUMBERS[:4])
    second = helper(core, "second", NUMBERS[4:])
    held, counting = held_for(core)
    vector = core.embedder.embed_one("forty-two")
    held.query(first.id, vector, 2)
    held.budget = held.of(first.id).nbytes  # full with the first
    held.query(second.id, vector, 2)
    held.query(second.id, vector, 2)
    assert counting.reads == 1 and counting.queries == 2, "the index answers the second"
    held.keep_s = 0.0  # the first is now idle long enough to make room
    ids = {e.id for e in core.examples.list(TERMINAL, "second")}
    assert held.query(second.id, vector, 1)[0].example_id in ids
    assert counting.reads == 2 and counting.queries == 2, "now held"
    assert held.of(first.id) is not None and counting.reads == 3, "the first made room"


def test_a_copy_that_fits_only_by_pushing_one_out_is_not_made(core):
    first = helper(core, "first", NUMBERS[:4])
    second = helper(core, "second", NUMBERS[4:])
    held, counting = held_for(core)
    vector = core.embedder.embed_one("forty-two")
    held.query(first.id, vector, 2)
    held.budget = held.of(first.id).nbytes * 3 // 2  # room for half of the second's copy
    for _ in range(3):
        held.query(first.id, vector, 2)
        held.query(second.id, vector, 2)
    assert counting.reads == 1 and counting.queries == 3, "neither is read again"
    assert counting.counts == 2, "each assistant's size is asked once"


def test_an_assistant_under_a_deleted_ones_id_never_gets_its_examples(core):
    first = helper(core, "numbers")
    assert chosen(core, "numbers", "forty-two")  # its vectors are held
    core.assistants.delete(TERMINAL, "numbers")
    second = core.assistants.create(TERMINAL, "colours", "Name the colour.", k=2)
    assert second.id == first.id  # SQLite gave the deleted one's id again
    assert chosen(core, "colours", "forty-two") == []
    core.examples.add(TERMINAL, "colours", "rouge", "red")
    assert chosen(core, "colours", "forty-two") == ["rouge"]


def test_a_write_in_another_process_is_seen_at_the_next_message(chroma_core, fewtune_home):
    # A terminal's `fewtune example add` while a bot runs, through a Chroma server.
    helper(chroma_core)
    assert "ninety-nine" not in chosen(chroma_core, "numbers", "ninety-nine")
    added = fewtune(
        fewtune_home, "example", "add", "numbers", "--input", "ninety-nine", "--output", "99"
    )
    assert added.returncode == 0, added.stderr
    assert chosen(chroma_core, "numbers", "ninety-nine")[0] == "ninety-nine"


@pytest.mark.parametrize(
    ("mark", "stamp_column"),
    [("index_dirty", "examples_stamp"), ("knowledge_dirty", "knowledge_stamp")],
)
def test_each_write_of_a_dirty_mark_draws_a_new_stamp(core, mark, stamp_column):
    assistant = helper(core, "numbers", NUMBERS[:1])

    def stamp() -> int:
        row = core.db.execute(f"SELECT {stamp_column} FROM assistants WHERE id = ?", [assistant.id])
        return int(row.fetchone()[0])

    before = stamp()
    with core.db.conn:
        core.db.execute(f"UPDATE assistants SET {mark} = 0 WHERE id = ?", [assistant.id])
    after = stamp()
    assert after != before
    core.assistants.edit(TERMINAL, "numbers", instructions="Digits only.")
    assert stamp() == after


def test_bad_held_settings_are_one_sentence(fewtune_home, cli):
    (fewtune_home / "fewtune.toml").write_text("[index]\nheld_examples = -1\n")
    result = cli("assistant", "list")
    assert result.exit_code != 0
    assert "index.held_examples must be a whole number of at least 0, not -1." in result.output
