"""Field types of `fewtune serve`'s request bodies, shared by its two rooms (serving, finetune).

The request models are strict (a string is no number, a number no boolean), as the OpenAPI
schema types them; `WholeNumber` is the one allowance strictness would otherwise refuse:
JSON Schema counts 3.0 as an integer, so an integer field takes a float with no fraction.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole)]
