"""The scripts' training log: every step's loss kept, a line every few steps and at the end."""

from __future__ import annotations

from training.trainer.progress import LossLog


def test_the_log_keeps_every_loss_and_prints_every_few_steps(capsys) -> None:
    log = LossLog(every=2, indent="  ")
    log({"type": "message", "level": "info", "message": "loading"})  # not a step: ignored
    for step in range(1, 6):
        log({"type": "metrics", "step": step, "total_steps": 5, "train_loss": 1 / step,
             "elapsed": step * 1.5})  # fmt: skip
    assert log.losses == [1.0, 0.5, 0.3333, 0.25, 0.2]
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "  step 2/5 loss 0.500 (3 s)",
        "  step 4/5 loss 0.250 (6 s)",
        "  step 5/5 loss 0.200 (8 s)",
    ]
    assert 0 <= log.minutes < 1
