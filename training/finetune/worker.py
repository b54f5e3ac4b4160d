"""The job worker: one fine-tuning job at a time, each in its own training process.

A thread in the server takes jobs in order: validating_files -> queued -> running. Training runs
in a child process (`python -m training.finetune.run_job`), so a crash or out-of-memory kills
that process, fails that job with a reason, and leaves the server answering. The child's JSON
lines become events and checkpoints in SQLite as they arrive. Cancel kills the process. When
the server stops, the child is asked to stop at a checkpoint and the job stays `running`; when
the server starts again (after a clean stop or a kill), such a job resumes from its newest
checkpoint, at most MAX_ATTEMPTS times, then fails with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from storage.processes import python_env
from storage.settings import Settings
from training.finetune.adapters import README, fine_tuned_model_name, publish_adapter
from training.finetune.hyperparameters import Hyperparameters, resolve_hyperparameters
from training.finetune.run_job import EXIT_STOPPED
from training.finetune.store import FINISHED, FineTuneStore, now

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # runs of one job (the first and the resumptions) before it fails
STOP_GRACE = 30.0  # seconds a training process gets to write its checkpoint and exit
TICK = 0.25  # seconds between looks at the queue and at the running process


@dataclass
class _Running:
    """The job being trained now and what its process has said so far."""

    job_id: str
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]
    reader: threading.Thread | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    first_progress: tuple[float, int] | None = None


class JobWorker:
    """Runs the fine-tuning jobs of `store` one at a time on the base model `base_name`."""

    def __init__(self, store: FineTuneStore, settings: Settings, base_name: str) -> None:
        self.store = store
        self.settings = settings
        self.base_name = base_name
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._current: _Running | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the worker thread if it is not running (idempotent)."""
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="fewtune-jobs", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop: the running job is checkpointed and left to resume at the next start."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_GRACE + 10)

    @property
    def current_pid(self) -> int | None:
        """The pid of the training process now running, if any."""
        current = self._current
        return current.process.pid if current else None

    def _loop(self) -> None:
        try:
            self._recover()
        except Exception:
            log.exception("recovering interrupted fine-tuning jobs failed")
        while not self._stopping:
            try:
                self._tick()
            except Exception:  # one bad row or file must not end the worker
                log.exception("fine-tuning worker step failed")
            self._wake.wait(TICK)
            self._wake.clear()
        self._pause_current()

    def _tick(self) -> None:
        for job in self.store.jobs_with_status("validating_files"):
            self._validate(job)
        if self._current is not None:
            self._watch(self._current)
        if self._current is None and not self._stopping:
            queued = self.store.jobs_with_status("queued")
            if queued:
                self._launch(queued[0])

    # -- states -------------------------------------------------------------------------

    def _validate(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        with self.store.one_step():  # a cancel since the job was read: nothing to validate
            current = self.store.get_job(job_id)
            if current is None or current["status"] != "validating_files":
                return
            self.store.add_event(job_id, f"Validating training file: {job['training_file']}")
        for key in ("training_file", "validation_file"):
            file_id = job[key]
            if file_id and not self._file_ok(file_id):
                self.store.fail_job(
                    job_id, "invalid_file", f"the {key.replace('_', ' ')} {file_id} was deleted"
                )
                return
        training_row = self.store.get_file(job["training_file"]) or {}
        try:
            resolved = resolve_hyperparameters(
                training_row["n_examples"], **json.loads(job["requested"])
            )
        except ValueError as exc:
            self.store.fail_job(job_id, "invalid_hyperparameters", str(exc))
            return
        with self.store.one_step():
            if self.store.update_job(
                job_id, ("validating_files",), status="queued", hyperparameters=resolved.to_dict()
            ):
                self.store.add_event(job_id, "Files validated, moving job to queued state")

    def _file_ok(self, file_id: str) -> bool:
        return self.store.get_file(file_id) is not None and self.store.file_path(file_id).is_file()

    def _launch(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        if not self._file_ok(job["training_file"]) or (
            job["validation_file"] and not self._file_ok(job["validation_file"])
        ):
            self.store.fail_job(job_id, "invalid_file", "a file of this job was deleted")
            return
        job_dir = self.store.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        hp = json.loads(job["hyperparameters"])
        config = {
            "n_epochs": hp["n_epochs"],
            "batch_size": hp["batch_size"],
            "learning_rate": Hyperparameters(**hp).learning_rate,
            "seed": job["seed"],
            **json.loads(job["options"]),
        }
        spec = {
            "job_id": job_id,
            "home": str(self.settings.home),
            "base_model": self.base_name,
            "training_file": str(self.store.file_path(job["training_file"])),
            "validation_file": (
                str(self.store.file_path(job["validation_file"]))
                if job["validation_file"]
                else None
            ),
            "output_dir": str(job_dir),
            "config": config,
        }
        spec_path = job_dir / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
        attempt = job["attempts"] + 1
        word = "started" if attempt == 1 else f"resumed (run {attempt} of at most {MAX_ATTEMPTS})"
        # The status change and its event are one step, before the process starts: a cancel
        # arriving meanwhile always reads after it in the events.
        with self.store.one_step():
            if not self.store.update_job(
                job_id, ("queued",), status="running", started_at=now(), attempts=attempt
            ):
                return  # cancelled in between
            self.store.add_event(job_id, f"Fine-tuning job {word}")
        env = python_env()
        env.setdefault("HF_HUB_OFFLINE", "1")
        log_file = open(job_dir / "train.log", "ab")  # noqa: SIM115 (closed when the job ends)
        process = subprocess.Popen(
            [sys.executable, "-m", "training.finetune.run_job", "--spec", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            cwd=job_dir,
            env=env,
            start_new_session=True,  # a Ctrl-C meant for the server does not hit training
        )
        self.store.update_job(job_id, pid=process.pid)
        running = _Running(job_id, process, log_file)
        running.reader = threading.Thread(
            target=self._read, args=(running,), name=f"fewtune-{job_id}", daemon=True
        )
        running.reader.start()
        self._current = running

    def _watch(self, running: _Running) -> None:
        job = self.store.get_job(running.job_id)
        if job is None or job["status"] != "running":  # cancelled: no checkpoint needed
            self._kill(running.process)
            self._end(running)
            self._clean(running.job_id)
            return
        code = running.process.poll()
        if code is None:
            return
        self._end(running)
        self._finish(job, running, code)

    def _end(self, running: _Running) -> None:
        if running.reader is not None:
            running.reader.join(timeout=10)
        running.log_file.close()
        self._current = None

    def _finish(self, job: dict[str, Any], running: _Running, code: int) -> None:
        try:
            self._record_outcome(job, running, code)
        finally:
            self._clean(job["id"])

    def _clean(self, job_id: str) -> None:
        """A job that is over keeps only its log: the adapter is published, nothing resumes."""
        job = self.store.get_job(job_id)
        if job is not None and job["status"] in FINISHED:
            _remove_training_output(self.store.job_dir(job_id))

    def _record_outcome(self, job: dict[str, Any], running: _Running, code: int) -> None:
        job_id = job["id"]
        if running.result is not None and code == 0:
            self._succeed(job, running.result)
        elif running.error is not None:
            self.store.fail_job(job_id, running.error["code"], running.error["message"])
        elif code == EXIT_STOPPED:
            self.store.fail_job(job_id, "training_stopped", "the training process was stopped")
        elif code < 0:
            name = signal.Signals(-code).name
            why = " (most likely it ran out of memory)" if -code == signal.SIGKILL else ""
            self.store.fail_job(
                job_id,
                "training_process_killed",
                f"the training process was killed by {name}{why}; create the job again to retry",
            )
        else:
            last = _last_line(self.store.job_dir(job_id) / "train.log")
            self.store.fail_job(
                job_id,
                "training_process_crashed",
                f"the training process exited with code {code}" + (f": {last}" if last else ""),
            )

    def _succeed(self, job: dict[str, Any], result: dict[str, Any]) -> None:
        job_id = job["id"]
        name = fine_tuned_model_name(job["model"], job["suffix"], job_id)
        if name is None:
            self.store.fail_job(job_id, "invalid_suffix", "the model name would be too long")
            return
        readme = README.format(
            name=name,
            job_id=job_id,
            base=job["model"],
            base_path=_adapter_base(Path(result["adapter_path"])),
            hyperparameters=job["hyperparameters"],
            trained_tokens=result["trained_tokens"],
        )
        try:
            publish_adapter(Path(result["adapter_path"]), self.settings.adapters_path, name, readme)
        except OSError as exc:
            self.store.fail_job(
                job_id, "publish_failed", f"the adapter could not be published: {exc}"
            )
            return
        _remove_training_output(self.store.job_dir(job_id))  # before the status says done
        if self.store.finish_job(
            job_id,
            "succeeded",
            ("running",),
            fine_tuned_model=name,
            trained_tokens=result["trained_tokens"],
            estimated_finish=None,
        ):
            self.store.add_event(job_id, f"New fine-tuned model created: {name}")
            self.store.add_event(job_id, "The job has successfully completed")

    # -- the training process's output ----------------------------------------------------

    def _read(self, running: _Running) -> None:
        assert running.process.stdout is not None
        for raw in running.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # a stray print from a library: not ours
            if isinstance(event, dict):
                try:
                    self._on_event(running, event)
                except Exception:
                    log.exception("recording an event of %s failed", running.job_id)

    def _on_event(self, running: _Running, event: dict[str, Any]) -> None:
        job_id, kind = running.job_id, event.get("type")
        if kind == "message":
            if str(event.get("message", "")).startswith("adapter published to"):
                return  # a path inside the server; "New fine-tuned model created" follows
            level = event.get("level", "info")
            self.store.add_event(job_id, str(event.get("message", "")), level=level)
        elif kind == "metrics":
            data = {
                key: event.get(key)
                for key in (
                    "step",
                    "total_steps",
                    "epoch",
                    "train_loss",
                    "valid_loss",
                    "full_valid_loss",
                    "tokens",
                )
            }
            data["learning_rate"] = event.get("learning_rate")
            running.last_metrics = data
            text = (
                f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
            )
            if data["valid_loss"] is not None:
                text += f", validation loss={data['valid_loss']:.4f}"
            self.store.add_event(job_id, text, type="metrics", data=data)
            self._estimate(running, int(event["step"]), int(event["total_steps"]))
        elif kind == "checkpoint":
            step = int(event["step"])
            metrics = {
                "train_loss": running.last_metrics.get("train_loss"),
                "valid_loss": running.last_metrics.get("valid_loss"),
            }
            self.store.add_checkpoint(job_id, step, metrics)
            self.store.add_event(job_id, f"Checkpoint created at step {step}")
        elif kind == "result":
            running.result = event
        elif kind == "error":
            running.error = {"code": str(event["code"]), "message": str(event["message"])}

    def _estimate(self, running: _Running, step: int, total: int) -> None:
        moment = time.time()
        if running.first_progress is None:
            running.first_progress = (moment, step)
            return
        started, first = running.first_progress
        if step > first:
            left = (moment - started) / (step - first) * (total - step)
            self.store.update_job(running.job_id, ("running",), estimated_finish=int(moment + left))

    # -- stopping and recovery --------------------------------------------------------------

    def _pause_current(self) -> None:
        """Server stopping: ask the training process to checkpoint and exit; the job resumes."""
        running = self._current
        if running is None:
            return
        running.process.send_signal(signal.SIGTERM)
        try:
            code = running.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            self._kill(running.process)
            code = running.process.returncode
        self._end(running)
        job = self.store.get_job(running.job_id)
        if job is None or job["status"] != "running":
            return
        if code == 0 or running.error is not None:
            self._finish(job, running, code)
            return
        self.store.update_job(running.job_id, pid=None)
        self.store.add_event(
            running.job_id,
            "The server is stopping: the job will resume from its last checkpoint when it starts",
        )

    def _recover(self) -> None:
        """Jobs left `running` by a server that stopped or was killed: resume them, or fail."""
        for job in self.store.jobs_with_status("running"):
            job_id = job["id"]
            if job["pid"]:
                _stop_orphan(job["pid"], job_id)
            if job["attempts"] >= MAX_ATTEMPTS:
                self.store.fail_job(
                    job_id,
                    "training_interrupted",
                    f"the server stopped during this job {job['attempts']} times; giving up",
                )
                self._clean(job_id)
                continue
            if self.store.update_job(job_id, ("running",), status="queued", pid=None):
                self.store.add_event(
                    job_id,
                    "The server stopped while this job was running; it will resume from its "
                    "last checkpoint",
                    level="warning",
                )

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait()


def _stop_orphan(pid: int, job_id: str) -> None:
    """A training process of `job_id` that outlived its server: let it checkpoint, then end it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # gone (or no /proc): nothing to stop
    if b"training.finetune.run_job" not in cmdline or job_id.encode() not in cmdline:
        return  # the pid now belongs to another process
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_training_output(job_dir: Path) -> None:
    for name in ("checkpoints", "adapter"):
        shutil.rmtree(job_dir / name, ignore_errors=True)


def _adapter_base(adapter: Path) -> str:
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        return str(config.get("base_model_name_or_path"))
    except (OSError, ValueError):
        return "unknown"


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:500] if lines else ""
