"""Python children of fewtune (the local server, the model calls, training jobs, the ONNX
export): the environment that lets them import this project's packages."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def python_env() -> dict[str, str]:
    """This process's environment with the project's root first on PYTHONPATH, so that
    `python -m <fewtune module>` works whatever the caller's sys.path or working folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env
