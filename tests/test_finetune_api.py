"""The fine-tuning API of `fewtune serve`: the real openai client against uvicorn on 127.0.0.1.

The base is a tiny random Llama with the SmolLM2 tokenizer; jobs train it for a few steps in a
real training process, so each run costs the process start (about 10 s here) and little more.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import openai
import pytest
from server_fixtures import make_tiny_model, serving, write_settings

TOKEN = "finetune-token-1"
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
TERMINAL = ("succeeded", "failed", "cancelled")


def chat_line(word: str, digit: str) -> str:
    messages = [
        {"role": "system", "content": "Write the number in digits."},
        {"role": "user", "content": word},
        {"role": "assistant", "content": digit},
    ]
    return json.dumps({"messages": messages})


TRAIN_JSONL = "\n".join(chat_line(w, str(i + 1)) for i, w in enumerate(WORDS)).encode() + b"\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path):
    home = tmp_path_factory.mktemp("home")
    settings = write_settings(home, model=str(tiny_model))
    with serving(settings, TOKEN, fine_tuning=True) as (base_url, app):
        yield base_url, settings, app.state.finetune.worker


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served[0], api_key=TOKEN, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("train.jsonl", TRAIN_JSONL), purpose="fine-tune").id


def wait_for(client: openai.OpenAI, job_id: str, statuses=TERMINAL, timeout: float = 180):
    deadline = time.monotonic() + timeout
    job = client.fine_tuning.jobs.retrieve(job_id)
    while job.status not in statuses:
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.2)
        job = client.fine_tuning.jobs.retrieve(job_id)
    return job


def all_events(client: openai.OpenAI, job_id: str) -> list:
    """Oldest first (the API lists newest first)."""
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=50))))


def wait_for_metrics(client: openai.OpenAI, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(e.type == "metrics" for e in all_events(client, job_id)):
        assert time.monotonic() < deadline, "no metrics event"
        time.sleep(0.2)


def long_job(client: openai.OpenAI, training_file: str, **fewtune: int):
    """A job of a few hundred steps: long enough to catch it running."""
    return client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=training_file,
        hyperparameters={"n_epochs": 50, "batch_size": 1},
        extra_body={"fewtune": fewtune} if fewtune else None,
    )


# -- files ------------------------------------------------------------------------------------


def test_files_upload_list_retrieve_content_delete(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("mine.jsonl", TRAIN_JSONL), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(TRAIN_JSONL)
    assert uploaded.filename == "mine.jsonl" and uploaded.purpose == "fine-tune"
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in client.files.list()]
    assert client.files.content(uploaded.id).content == TRAIN_JSONL
    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_malformed_file_is_refused_with_its_line(client: openai.OpenAI) -> None:
    bad = TRAIN_JSONL.splitlines()[0] + b'\n{"messages": [oops]}\n'
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", bad), purpose="fine-tune")
    message = caught.value.body["message"]  # type: ignore[index]
    assert "Line 2" in message and "not valid JSON" in message
    with pytest.raises(openai.BadRequestError, match="fine-tune"):
        client.files.create(file=("x.jsonl", TRAIN_JSONL), purpose="assistants")


def test_every_route_needs_the_token(served, training_file: str) -> None:
    wrong = openai.OpenAI(base_url=served[0], api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.files.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file)
    for path in ("/files", f"/files/{training_file}/content", "/fine_tuning/jobs"):
        assert httpx.get(served[0] + path).status_code == 401


def test_ids_never_reach_a_path(client: openai.OpenAI, served) -> None:
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("..%2F..%2Ffewtune.db")
    response = httpx.get(
        served[0] + "/files/file-..%2F..%2Ffewtune.db/content",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-../../x")


# -- a job from upload to chat ----------------------------------------------------------------


def test_job_trains_publishes_and_serves_the_adapter(
    client: openai.OpenAI, served, training_file: str, tiny_model: Path
) -> None:
    job = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=training_file,
        validation_file=training_file,
        suffix="numbers",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}},
        },
        extra_body={"fewtune": {"checkpoint_every": 2}},
    )
    assert job.status == "validating_files" and job.fine_tuned_model is None
    job = wait_for(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny-llama:numbers:{job.id}"
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.seed == 7 and job.finished_at is not None
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == 1.0

    events = all_events(client, job.id)
    metrics = [e for e in events if e.type == "metrics"]
    assert [m.data["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(m.data["train_loss"] > 0 for m in metrics)
    assert metrics[-1].data["valid_loss"] is not None
    assert metrics[-1].data["full_valid_loss"] == metrics[-1].data["valid_loss"]  # the last step
    assert events[-1].message == "The job has successfully completed"
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [2]
    assert checkpoints[0].metrics.train_loss == metrics[1].data["train_loss"]

    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    assert (served[1].adapters_path / job.fine_tuned_model / "adapter_model.safetensors").is_file()
    assert not (served[1].home / "jobs" / job.id / "checkpoints").exists()  # cleaned once over
    reply = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "system", "content": "Digits."}, {"role": "user", "content": "one"}],
        max_tokens=4,
        temperature=0,
    )
    assert reply.model == job.fine_tuned_model and reply.choices[0].message.content

    # The adapter downloads as a PEFT folder that peft loads on the base.
    response = httpx.get(
        f"{served[0]}/fine_tuning/jobs/{job.id}/adapter",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    folder = served[1].home / "downloaded"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        names = set(archive.getnames())
        archive.extractall(folder, filter="data")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert_loadable_adapter(folder, tiny_model)


def assert_loadable_adapter(folder: Path, tiny_model: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model.resolve())
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), folder)
    saved = load_file(folder / "adapter_model.safetensors")
    lora_b = [name for name in saved if "lora_B" in name]
    assert lora_b and any(saved[name].abs().sum() > 0 for name in lora_b)  # it learned
    loaded = dict(model.named_parameters())
    some = lora_b[0].replace(".weight", ".default.weight")
    assert torch.equal(loaded[some], saved[lora_b[0]])


def test_adapter_download_refused_before_success(client: openai.OpenAI, served) -> None:
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=upload(client))
    client.fine_tuning.jobs.cancel(job.id)
    response = httpx.get(
        f"{served[0]}/fine_tuning/jobs/{job.id}/adapter",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400 and "cancelled" in response.json()["error"]["message"]


def upload(client: openai.OpenAI) -> str:
    return client.files.create(file=("t.jsonl", TRAIN_JSONL), purpose="fine-tune").id


# -- create: hyperparameters and refusals ---------------------------------------------------


def test_hyperparameters_auto_and_numbers_in_both_forms(
    client: openai.OpenAI, training_file: str
) -> None:
    auto = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file, hyperparameters={"n_epochs": "auto"}
    )
    assert auto.hyperparameters.n_epochs == "auto"
    validated = wait_for(client, auto.id, ("queued", "running", *TERMINAL))
    client.fine_tuning.jobs.cancel(auto.id)
    resolved = validated.hyperparameters
    assert validated.method.supervised.hyperparameters.n_epochs == resolved.n_epochs
    # 8 examples: epochs raised to 100 // 8 = 12 (OpenAI's rule), batch 4, multiplier 1.0.
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (
        12,
        4,
        1.0,
    )
    numbers = client.fine_tuning.jobs.create(
        model="tiny-llama",
        training_file=training_file,
        hyperparameters={"batch_size": 2},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 1, "learning_rate_multiplier": 0.5}},
        },
    )
    client.fine_tuning.jobs.cancel(numbers.id)
    got = numbers.hyperparameters
    assert (got.n_epochs, got.batch_size, got.learning_rate_multiplier) == (1, 2, 0.5)
    assert numbers.method.supervised.hyperparameters.batch_size == 2


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
        (
            {
                "hyperparameters": {"n_epochs": 2},
                "method": {
                    "type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": 3}},
                },
            },
            "given twice",
        ),
        ({"training_file": "file-" + "a" * 24}, "does not exist"),
        ({"suffix": "../etc"}, "suffix"),
        ({"extra_body": {"fewtune": {"lora_r": 0}}}, "lora_r"),
        ({"extra_body": {"fewtune": {"base_model_name": "x"}}}, "base_model_name"),
    ],
)
def test_bad_job_requests_get_one_clear_sentence(
    client: openai.OpenAI, training_file: str, changes: dict, words: str
) -> None:
    request = {"model": "tiny-llama", "training_file": training_file, **changes}
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(**request)
    assert words in caught.value.body["message"]  # type: ignore[index]


def test_a_model_not_served_here_does_not_exist(client: openai.OpenAI, training_file: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file)
    assert "does not exist" in caught.value.body["message"]  # type: ignore[index]


def test_list_pages_with_cursor(client: openai.OpenAI, training_file: str) -> None:
    made = []
    for _ in range(3):
        job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file)
        client.fine_tuning.jobs.cancel(job.id)
        made.append(job.id)
    first = client.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in first.data] == made[::-1][:2] and first.has_more is True
    second = client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert second.data[0].id == made[0]
    every = [j.id for j in client.fine_tuning.jobs.list(limit=2)]  # the client follows pages
    assert every[:3] == made[::-1] and len(every) == len(set(every))
    events = client.fine_tuning.jobs.list_events(made[0], limit=1)
    assert len(events.data) == 1 and events.has_more is True
    assert events.data[0].message == "Job cancelled."


# -- cancel, a crashed training process ---------------------------------------------------


def test_cancel_a_running_job(client: openai.OpenAI, served, training_file: str) -> None:
    job = long_job(client, training_file)
    wait_for(client, job.id, ("running", *TERMINAL))
    wait_for_metrics(client, job.id)
    pid = served[2].current_pid
    assert pid is not None
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    deadline = time.monotonic() + 30
    while served[2].current_pid == pid:  # the worker kills the training process
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_killed_training_process_fails_the_job_not_the_server(
    client: openai.OpenAI, served, training_file: str
) -> None:
    job = long_job(client, training_file)
    wait_for(client, job.id, ("running", *TERMINAL))
    wait_for_metrics(client, job.id)
    os.kill(served[2].current_pid, signal.SIGKILL)  # what the out-of-memory killer does
    job = wait_for(client, job.id)
    assert job.status == "failed"
    assert job.error is not None and job.error.code == "training_process_killed"
    assert "SIGKILL" in job.error.message and "out of memory" in job.error.message
    assert "tiny-llama" in [m.id for m in client.models.list()]  # the server still answers
    assert all_events(client, job.id)[-1].level == "error"


# -- a server killed mid-job resumes it after a restart ---------------------------------------


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    (home / "server.json").unlink(missing_ok=True)
    env = {**os.environ, "FEWTUNE_HOME": str(home), "FEWTUNE_SERVER_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "training.serving", "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "server.log", "ab"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 120
    while not (home / "server.json").exists():
        assert process.poll() is None, (home / "server.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    return process, json.loads((home / "server.json").read_text())["url"]


@pytest.mark.slow
def test_server_killed_mid_job_resumes_from_checkpoint(tmp_path: Path, tiny_model: Path) -> None:
    home = tmp_path / "server-home"
    write_settings(home, model=str(tiny_model))
    process, url = start_server(home)
    try:
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0, timeout=60)
        job = long_job(client, upload(client), max_steps=24, checkpoint_every=4)
        deadline = time.monotonic() + 120
        while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.1)
        process.kill()  # no shutdown at all: the job is left `running`
        process.wait()
        process, url = start_server(home)
        client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0, timeout=60)
        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in all_events(client, job.id)]
        assert any("will resume from its last checkpoint" in m for m in messages)
        resumed = [m for m in messages if m.startswith("resumed from step-")]
        assert resumed, messages
        assert done.fine_tuned_model in [m.id for m in client.models.list()]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
