"""The fine-tuning API's hyperparameter rules: what "auto" resolves to, which numbers it takes."""

import pytest

from training.finetune.hyperparameters import (
    BASE_LEARNING_RATE,
    MAX_AUTO_EPOCHS,
    MAX_TARGET_EXAMPLES,
    MIN_AUTO_EPOCHS,
    MIN_TARGET_EXAMPLES,
    auto_epochs,
    resolve_hyperparameters,
)
from training.trainer import TrainConfig


def test_hyperparameters_resolve_auto_and_check_numbers():
    assert resolve_hyperparameters(10).n_epochs == 10  # at least 100 example-passes
    assert resolve_hyperparameters(1000).to_dict() == {
        "n_epochs": 3,
        "batch_size": 8,
        "learning_rate_multiplier": 1.0,
    }
    assert resolve_hyperparameters(20_000).n_epochs == 1
    assert resolve_hyperparameters(3).batch_size == 3
    assert resolve_hyperparameters(100_000).batch_size == 32
    hp = resolve_hyperparameters(50, n_epochs=2, batch_size=16, learning_rate_multiplier=0.5)
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate) == (2, 16, 1e-4)
    for bad in ({"n_epochs": 0}, {"batch_size": 1.5}, {"learning_rate_multiplier": "fast"}):
        with pytest.raises(ValueError, match="must be"):
            resolve_hyperparameters(50, **bad)


def test_multiplier_one_is_the_trainers_default_rate():
    assert resolve_hyperparameters(50).learning_rate == BASE_LEARNING_RATE
    assert TrainConfig().learning_rate == BASE_LEARNING_RATE


@pytest.mark.parametrize(
    ("n_examples", "epochs"),
    [
        # small files: raised towards 100 example-passes, at most 25 epochs
        (1, 25),
        (4, 25),
        (5, 20),
        (8, 12),
        (10, 10),
        (20, 5),
        (25, 4),
        (26, 3),  # 100 // 26: rounded down, as OpenAI's rule does
        # medium: the target, 3
        (34, 3),
        (1_000, 3),
        (8_333, 3),
        # large files: lowered towards 25,000 example-passes, at least 1 epoch
        (8_334, 2),
        (12_500, 2),
        (12_501, 1),
        (100_000, 1),
    ],
)
def test_auto_epochs_follow_openais_rule(n_examples, epochs):
    assert auto_epochs(n_examples) == epochs
    assert resolve_hyperparameters(n_examples).n_epochs == epochs
    assert resolve_hyperparameters(n_examples, n_epochs="auto").n_epochs == epochs


def test_auto_epochs_stay_within_their_bounds_at_every_size():
    for n in range(1, 30_000):
        epochs = auto_epochs(n)
        assert MIN_AUTO_EPOCHS <= epochs <= MAX_AUTO_EPOCHS
        if epochs not in (MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS):  # not held at a bound
            assert epochs * n <= MAX_TARGET_EXAMPLES
            assert (epochs + 1) * n > MIN_TARGET_EXAMPLES  # one more would pass 100
        if n > 1:  # more data never means more epochs
            assert epochs <= auto_epochs(n - 1)
    with pytest.raises(ValueError, match="no examples"):
        auto_epochs(0)
