"""The LoRA trainer on a tiny Llama with SmolLM2's real tokenizer: labels, learning, checkpoints."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from server_fixtures import make_tiny_model

from training.trainer import TrainConfig, TrainError, train
from training.trainer.chat_data import IGNORE_INDEX, DatasetError, tokenize_chat
from training.trainer.lora import _collate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SYSTEM = {"role": "system", "content": "Write the number in digits."}
# Fast settings: a high rate so that a few steps move the weights clearly.
FAST = TrainConfig(n_epochs=2, batch_size=4, learning_rate=5e-3, warmup=0, checkpoint_every=0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices run fastest on one thread, above all on a CPU shared with other work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with SmolLM2's tokenizer (from the embedded GGUF), saved as a folder."""
    return make_tiny_model(
        tmp_path_factory.mktemp("tiny-llama"),
        hidden_size=32,
        intermediate_size=64,
        max_position_embeddings=256,
        initializer_range=0.02,
    )


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def numbers_file(path: Path, count: int = 12, last_turn: dict | None = None) -> Path:
    """Number words to digits; `last_turn` appends a user turn and that assistant turn."""
    from num2words import num2words

    with path.open("w") as file:
        for n in range(count):
            value = 17 * n + 3
            messages = [
                SYSTEM,
                {"role": "user", "content": num2words(value)},
                {"role": "assistant", "content": str(value)},
            ]
            if last_turn:
                messages += [{"role": "user", "content": "thanks"}, last_turn]
            file.write(json.dumps({"messages": messages}) + "\n")
    return path


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float = 1e-6) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol), key


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


# -- labels ------------------------------------------------------------------------------------


def test_labels_keep_only_weighted_assistant_turns_and_their_end_token(tokenizer):
    messages = [
        SYSTEM,
        {"role": "user", "content": "seven"},
        {"role": "assistant", "content": "seven hundred", "weight": 0},
        {"role": "user", "content": "no, digits"},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "and eight?"},
        {"role": "assistant", "content": "8"},
    ]
    chat = tokenize_chat(tokenizer, messages, max_seq_len=512)
    learned = [
        (i, t)
        for i, (t, label) in enumerate(zip(chat.input_ids, chat.labels, strict=True))
        if label >= 0
    ]
    assert all(chat.labels[i] == t for i, t in learned)
    assert tokenizer.decode([t for _, t in learned]) == "7<|im_end|>8<|im_end|>"
    assert chat.n_trained == len(learned)
    # The rest of the conversation, the weight-0 answer included, is in the input but not learned.
    assert "seven hundred" in tokenizer.decode(chat.input_ids)
    assert tokenizer.decode(chat.input_ids[-2:]) == "<|im_end|>\n"  # the template's last "\n"
    assert chat.labels[-1] == IGNORE_INDEX


def test_padding_with_the_end_token_does_not_hide_real_end_tokens(tokenizer):
    pad = tokenizer.pad_token_id
    assert pad == tokenizer.eos_token_id  # SmolLM2: the situation this guards against
    short = tokenize_chat(
        tokenizer,
        [SYSTEM, {"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}],
        512,
    )
    long = tokenize_chat(
        tokenizer,
        [
            SYSTEM,
            {"role": "user", "content": "one thousand two hundred"},
            {"role": "assistant", "content": "1200"},
        ],
        512,
    )
    batch = _collate([short, long], pad, "cpu")
    ids, labels, mask = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
    n = len(short.input_ids)
    assert (ids[n:] == pad).all() and (labels[n:] == IGNORE_INDEX).all() and (mask[n:] == 0).all()
    assert (labels == pad).sum() == 1  # the real end of "1" is still learned


def test_truncation_cuts_to_max_seq_len(tokenizer):
    chat = tokenize_chat(
        tokenizer,
        [SYSTEM, {"role": "user", "content": "x " * 50}, {"role": "assistant", "content": "1"}],
        16,
    )
    assert chat.truncated and len(chat.input_ids) == len(chat.labels) == 16
    assert chat.n_trained == 0


# -- training ----------------------------------------------------------------------------------


def test_lora_learns_and_only_lora_weights_are_trained(tiny_model, tokenizer, tmp_path):
    data = numbers_file(tmp_path / "train.jsonl")
    base_hash = hashlib.sha256((tiny_model / "model.safetensors").read_bytes()).hexdigest()
    config = TrainConfig(**{**FAST.__dict__, "checkpoint_every": 3, "keep_checkpoints": 5})
    result = train(config, tiny_model, data, tmp_path / "out")
    assert result.steps == result.total_steps == 6 and not result.cancelled
    assert result.trained_tokens == 2 * sum(
        len(tokenize_chat(tokenizer, json.loads(line)["messages"], 2048).input_ids)
        for line in data.read_text().splitlines()
    )

    weights = adapter_weights(result.adapter_path)
    assert weights and all("lora_A" in key or "lora_B" in key for key in weights)
    # lora_B starts at zero: non-zero now means it was trained.
    assert all(w.abs().max() > 0 for key, w in weights.items() if "lora_B" in key)
    # Base weights are untouched: the file is the same and the optimizer held LoRA tensors only.
    assert hashlib.sha256((tiny_model / "model.safetensors").read_bytes()).hexdigest() == base_hash
    import torch

    optimizer = torch.load(tmp_path / "out/checkpoints/step-3/optimizer.pt", weights_only=True)
    assert len(optimizer["state"]) == len(weights)


def test_weight_zero_turns_are_not_learned(tiny_model, tmp_path):
    config = TrainConfig(**{**FAST.__dict__, "lora_dropout": 0.0})
    plain = numbers_file(tmp_path / "plain.jsonl")
    extra = {"role": "assistant", "content": "you are welcome, happy to help"}
    ignored = numbers_file(tmp_path / "ignored.jsonl", last_turn={**extra, "weight": 0})
    learned = numbers_file(tmp_path / "learned.jsonl", last_turn=extra)

    def trained(path: Path) -> dict:
        return adapter_weights(train(config, tiny_model, path, tmp_path / path.stem).adapter_path)

    baseline = trained(plain)
    # A weight-0 turn after the answer cannot influence it (causal attention): same adapter.
    assert_same_weights(trained(ignored), baseline, atol=1e-5)
    # The same turn with weight 1 is learned: a clearly different adapter.
    assert max_difference(trained(learned), baseline) > 1e-3


def test_validation_loss_is_reported_and_falls(tiny_model, tmp_path):
    data = numbers_file(tmp_path / "train.jsonl")
    events: list[dict] = []
    config = TrainConfig(**{**FAST.__dict__, "n_epochs": 3, "eval_every": 3, "checkpoint_every": 2})
    result = train(
        config, tiny_model, data, tmp_path / "out", validation_file=data, on_event=events.append
    )
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [e["step"] for e in metrics] == list(range(1, 10))
    assert [e["step"] for e in metrics if "valid_loss" in e] == [3, 6, 9]
    valid = [e["valid_loss"] for e in metrics if "valid_loss" in e]
    assert valid[-1] < valid[0]
    assert result.valid_loss == valid[-1]
    assert metrics[-1]["tokens"] == result.trained_tokens
    assert all(e["train_loss"] > 0 for e in metrics)
    # Checkpoints at steps 2, 4, 6, 8; the two newest are kept.
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [2, 4, 6, 8]
    assert sorted(p.name for p in (tmp_path / "out/checkpoints").iterdir()) == ["step-6", "step-8"]


def test_validation_in_between_scores_a_sample_and_the_end_scores_the_whole_file(
    tiny_model, tmp_path
):
    data = numbers_file(tmp_path / "train.jsonl")
    chats = len(data.read_text().splitlines())
    events: list[dict] = []
    config = TrainConfig(**{**FAST.__dict__, "n_epochs": 2, "eval_every": 2, "valid_sample": 2})
    result = train(
        config, tiny_model, data, tmp_path / "out", validation_file=data, on_event=events.append
    )
    scored = [e for e in events if e["type"] == "metrics" and "valid_loss" in e]
    assert [e["valid_chats"] for e in scored[:-1]] == [2] * (len(scored) - 1)
    assert scored[-1]["valid_chats"] == chats > 2
    assert all("full_valid_loss" not in e for e in scored[:-1])
    assert scored[-1]["full_valid_loss"] == scored[-1]["valid_loss"] == result.valid_loss


def test_should_stop_cancels_and_resume_gives_the_uninterrupted_result(tiny_model, tmp_path):
    data = numbers_file(tmp_path / "train.jsonl")
    config = TrainConfig(
        **{**FAST.__dict__, "n_epochs": 3, "checkpoint_every": 2, "keep_checkpoints": 9}
    )
    whole = train(config, tiny_model, data, tmp_path / "whole")

    asked = []

    def stop_after_three_steps() -> bool:
        asked.append(1)
        return len(asked) > 3

    out = tmp_path / "interrupted"
    stopped = train(config, tiny_model, data, out, should_stop=stop_after_three_steps)
    assert stopped.cancelled and stopped.steps == 3 and stopped.adapter_path is None
    assert not (out / "adapter").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]

    events: list[dict] = []
    resumed = train(config, tiny_model, data, out, resume_from="latest", on_event=events.append)
    assert any("resumed from step-3 at step 3" in e.get("message", "") for e in events)
    assert [e["step"] for e in events if e["type"] == "metrics"] == list(range(4, 10))
    assert resumed.steps == whole.steps == 9 and resumed.trained_tokens == whole.trained_tokens
    # Weights, optimizer moments, schedule, batch order and dropout all carried over.
    assert_same_weights(adapter_weights(resumed.adapter_path), adapter_weights(whole.adapter_path))

    # An explicit older checkpoint works too; checkpoints of other data are refused.
    again = train(
        config, tiny_model, data, tmp_path / "again", resume_from=out / "checkpoints/step-2"
    )
    assert_same_weights(adapter_weights(again.adapter_path), adapter_weights(whole.adapter_path))
    other = numbers_file(tmp_path / "other.jsonl", count=5)
    with pytest.raises(TrainError, match="different training file"):
        train(config, tiny_model, other, out, resume_from=out / "checkpoints/step-2")


def test_the_adapter_loads_with_peft_and_names_its_base(tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = TrainConfig(**{**FAST.__dict__, "base_model_name": "HuggingFaceTB/tiny-test"})
    result = train(config, tiny_model, numbers_file(tmp_path / "t.jsonl"), tmp_path / "out")
    assert sorted(p.name for p in result.adapter_path.iterdir() if p.suffix != ".md") == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    saved = json.loads((result.adapter_path / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "HuggingFaceTB/tiny-test"
    assert saved["r"] == 16 and saved["lora_alpha"] == 32
    assert set(saved["target_modules"]) == set(TrainConfig().target_modules)
    assert not list(tmp_path.glob("out/.adapter-*"))  # the temporary folder is gone

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[1, 4093, 198, 6004, 2]])
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, result.adapter_path)
    loaded = {k.replace(".default", ""): v for k, v in tuned.state_dict().items() if "lora_" in k}
    for key, value in adapter_weights(result.adapter_path).items():
        assert torch.equal(loaded[key], value), key
    assert not torch.allclose(tuned(ids).logits, before)


def test_bad_input_is_one_clear_error(tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": [SYSTEM, {"role": "assistant", "content": "1"}]}) + "\n{oops\n"
    )
    with pytest.raises(DatasetError, match="^line 2: is not valid JSON"):
        train(FAST, tiny_model, bad, tmp_path / "out")
    with pytest.raises(TrainError, match="not a model folder"):
        train(FAST, tmp_path, numbers_file(tmp_path / "t.jsonl"), tmp_path / "out")
    with pytest.raises(TrainError, match='unknown training option "epochs"'):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(TrainError, match="batch_size must be at least 1"):
        train(
            TrainConfig(batch_size=0),
            tiny_model,
            numbers_file(tmp_path / "t.jsonl"),
            tmp_path / "o",
        )


@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes_matches_one(tiny_model, tmp_path):
    data = numbers_file(tmp_path / "train.jsonl")
    options = json.dumps(
        {**FAST.__dict__, "lora_dropout": 0.0, "target_modules": list(FAST.target_modules)}
    )
    single = train(TrainConfig.from_dict(json.loads(options)), tiny_model, data, tmp_path / "one")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    # `--cpu` would make accelerate start one process (more need MPI); `--multi_gpu` starts them
    # with torchrun, and without a GPU the trainer joins them in a gloo group on the CPU.
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["-m", "training.trainer", "--base", str(tiny_model), "--train", str(data)]
    command += ["--out", str(tmp_path / "two"), "--config", options]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert lines[-1]["type"] == "result" and lines[-1]["steps"] == single.steps
    assert "2 process(es)" in lines[0]["message"]
    assert sum(1 for x in lines if x["type"] == "result") == 1  # only the main process reports
    # The same global batches and a loss normalised over them: the same adapter as one process.
    two = adapter_weights(tmp_path / "two/adapter")
    assert_same_weights(two, adapter_weights(single.adapter_path), atol=1e-5)
