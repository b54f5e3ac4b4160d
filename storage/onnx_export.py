"""Export the embedded all-MiniLM-L6-v2 to an ONNX graph, so the embedder runs without torch.

    python -m storage.onnx_export MODEL_DIR OUT

The embedder runs this once per machine in a child process (torch and transformers never load
into the bot's process) and caches the graph; see `storage.embeddings.onnx_graph`. The graph is
checked against the torch model on a padded batch before it is written: a graph that would move
the vectors is never installed.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

TOLERANCE = 1e-4  # largest difference allowed between the graph's hidden states and torch's
OPSET = 17


def export(model_dir: Path, out: Path) -> float:
    """Write the graph to `out`; returns the largest difference from torch on a check batch."""
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    check = tokenizer(
        ["forty-two", "quatre-vingt-dix-sept mille trois cent", "восемьдесят два"],
        padding=True,
        return_tensors="pt",
    )
    with torch.inference_mode():  # before exporting: tracing leaves the model in its own mode
        expected = Hidden()(check["input_ids"], check["attention_mask"]).numpy()
    axes = {0: "batch", 1: "tokens"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(),
            (check["input_ids"], check["attention_mask"]),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            opset_version=OPSET,
            dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(
        None,
        {
            "input_ids": check["input_ids"].numpy(),
            "attention_mask": check["attention_mask"].numpy(),
        },
    )
    mask = check["attention_mask"].numpy()[..., None].astype(bool)
    return float(np.abs(np.where(mask, got - expected, 0.0)).max())


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m storage.onnx_export MODEL_DIR OUT", file=sys.stderr)
        return 2
    out = Path(argv[1])
    difference = export(Path(argv[0]), out)
    if difference > TOLERANCE:
        out.unlink(missing_ok=True)
        print(f"the exported graph differs from torch by {difference:.2e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
