"""The loss-curve image: a pure function from metrics to PNG bytes."""

from __future__ import annotations

import io

from bot.discord.loss_chart import loss_curve_png, loss_points

PNG = b"\x89PNG\r\n\x1a\n"


def test_points_keep_one_value_per_step_in_order():
    metrics = [
        {"step": 2, "train_loss": 2.0},
        {"step": 1, "train_loss": 3.0, "valid_loss": 3.5},
        {"step": 2, "train_loss": 1.5, "valid_loss": None},
        {"train_loss": 9.0},  # no step: not a point
    ]
    assert loss_points(metrics) == ([(1, 3.0), (2, 1.5)], [(1, 3.5)])


def test_png_of_a_curve():
    from PIL import Image

    metrics = [{"step": s, "train_loss": 3 / s, "valid_loss": 3.2 / s} for s in range(1, 20)]
    data = loss_curve_png(metrics, "helper: loss")
    assert data is not None and data.startswith(PNG)
    image = Image.open(io.BytesIO(data))
    assert image.size == (600, 350)
    # Something was drawn: the image is not one flat colour.
    assert len(set(image.convert("L").getdata())) > 10


def test_no_points_no_image():
    assert loss_curve_png([]) is None
    assert loss_curve_png([{"step": 1, "train_loss": None}]) is None
