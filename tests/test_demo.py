"""The demo: the few-shot `numbers` and its promoted twin `numbers-tuned` (the LoRA adapter
shipped in assistants/demo/adapter/), set up by `fewtune demo` and shown side by side."""

from __future__ import annotations

import json
import re

import pytest
from fake_model import FakeModel

from assistants import TERMINAL, Core, Origin
from assistants.demo import DEMO_ADAPTER, TWIN_NAME, install_demo, shipped_adapter
from storage.settings import load_settings


def test_the_adapter_is_shipped_small_and_in_half_precision():
    folder = shipped_adapter()
    assert folder is not None, "assistants/demo/adapter/ is missing: scripts/make_demo_adapter.py"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] <= 16 and config["base_model_name_or_path"] == "SmolLM2-135M-Instruct"
    size = (folder / "adapter_model.safetensors").stat().st_size
    assert size < 8_000_000
    header = (folder / "adapter_model.safetensors").read_bytes()[8:4096].decode(errors="ignore")
    assert '"dtype":"F16"' in header and '"F32"' not in header
    record = json.loads((folder / "training.json").read_text())
    assert record["training_chats"] >= 100 and record["remake"].endswith("make_demo_adapter.py")


def test_the_twin_is_registered_like_a_promoted_assistant(core):
    few_shot = install_demo(core, TERMINAL)
    twin = core.assistants.get(TERMINAL, TWIN_NAME)
    assert few_shot.fine_tuned_model is None
    assert twin.fine_tuned_model == f"local:{DEMO_ADAPTER}"
    assert twin.instructions == few_shot.instructions
    assert core.examples.count(TERMINAL, TWIN_NAME) == core.examples.count(TERMINAL, "numbers")
    served = core.settings.adapters_path / DEMO_ADAPTER
    assert (served / "adapter_model.safetensors").read_bytes() == (
        shipped_adapter() / "adapter_model.safetensors"
    ).read_bytes()
    install_demo(core, TERMINAL)  # again: nothing changes
    assert core.assistants.get(TERMINAL, TWIN_NAME).version == twin.version
    # Rolled back like any promoted assistant, it answers few-shot.
    assert core.promotions.rollback(TERMINAL, TWIN_NAME).fine_tuned_model is None


def test_without_its_adapter_the_twin_is_few_shot(core):
    install_demo(core, TERMINAL, with_twin_adapter=False)
    assert core.assistants.get(TERMINAL, TWIN_NAME).fine_tuned_model is None


def test_the_demo_chat_shows_both_answers_with_their_examples(cli, fewtune_home, embedder):
    with FakeModel(reply="45") as model:
        (fewtune_home / "fewtune.toml").write_text(
            f'[providers.fake]\nbase_url = "{model.base_url}"\nmax_retries = 0\n'
        )
        core = Core.open(fewtune_home, embedder=embedder)
        try:
            install_demo(core, TERMINAL)
            core.assistants.edit(TERMINAL, "numbers", model="fake:base")
            core.assistants.set_fine_tuned_model(TERMINAL, TWIN_NAME, "fake:tuned")
        finally:
            core.close()
        result = cli("demo", input="quarante-cinq\n/exit\n")
        assert result.exit_code == 0, result.output
        assert [body["model"] for body in model.history] == ["base", "tuned"]
    out = result.output
    assert "Its promoted twin 'numbers-tuned' answers with its LoRA adapter" in out
    # (input() writes its prompt without the newline a terminal's Enter adds)
    lines = [line.removeprefix("you> ") for line in out.splitlines() if "[examples: " in line]
    assert [line.split()[0] for line in lines] == ["numbers", TWIN_NAME]
    assert all(re.search(r"\s45\s", line) and " → " in line for line in lines), lines


@pytest.mark.slow  # the embedded model on the local server: about a minute on 2 cores
async def test_the_shipped_adapter_loads_and_answers(fewtune_home, embedder):
    from assistants.local_server import stop_local_server

    core = Core.open(fewtune_home, embedder=embedder)
    try:
        install_demo(core, TERMINAL)
        replies = {}
        for name in ("numbers", TWIN_NAME):
            replies[name] = await core.chat.answer(
                TERMINAL, Origin(assistant=name), "quarante-cinq"
            )
        twin = replies[TWIN_NAME]
        assert twin.error is None and twin.model == f"local:{DEMO_ADAPTER}"
        assert re.fullmatch(r"\d+", twin.text.strip()), twin.text
        assert replies["numbers"].model == "local:SmolLM2-135M-Instruct"
    finally:
        await core.providers.close()
        core.close()
        stop_local_server(load_settings(fewtune_home))
