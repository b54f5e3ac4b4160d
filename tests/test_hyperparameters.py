"""The fine-tuning API's hyperparameter rules: what "auto" resolves to, which numbers it takes."""

import pytest

from training.finetune.hyperparameters import BASE_LEARNING_RATE, resolve_hyperparameters
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
