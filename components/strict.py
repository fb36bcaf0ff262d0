"""The base of every model a person writes: system configs, strategy parameters and blocks, limits, sweep
jobs, scenario and portfolio files.

Unknown keys are errors (a typo must not fall back to a default), numbers are finite (an infinite capital
or a NaN fraction is refused, not traded), and a boolean is not a number (YAML's ``yes`` for a period
would otherwise be 1).
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

_NUMBERS = (int, float)


def _numeric(annotation: Any) -> bool:
    """Whether a field takes a number and not a boolean."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _numeric(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(annotation) if a is not type(None)]
        return bool not in args and any(_numeric(a) for a in args)
    return annotation in _NUMBERS


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                value = data.get(key)
                if isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"{key}: a number, not the boolean {value!r}")
        return data
