"""Values clients name things by: names (subjects, applications, services, streams) and row ids.

Names are stripped, then refused when empty, longer than :data:`MAX_NAME_LENGTH`, or not storable as
PostgreSQL text (a NUL character, a lone UTF-16 surrogate). Row ids are 64-bit integers; a larger one
names nothing, so in a path it is a 404 (``serve_app.errors`` maps :data:`ROW_ID_RANGE` errors).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

MAX_NAME_LENGTH = 255
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ROW_ID_RANGE = "row_id_range"


def storable_text(value: str) -> str:
    """``value`` unchanged if PostgreSQL can store it as text; ValueError naming what is wrong otherwise."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it holds a lone surrogate)") from None
    return value


def clean_name(value: str) -> str:
    """A name as stored: stripped, 1 to :data:`MAX_NAME_LENGTH` characters of storable text."""
    name = storable_text(value).strip()
    if not name:
        raise ValueError("must not be empty or only spaces")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters")
    return name


def check_filter_name(value: str) -> str:
    """A name to filter by, matched exactly: storable text, not longer than a name can be."""
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters")
    return storable_text(value)


def check_row_id(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise PydanticCustomError(ROW_ID_RANGE, "{value} is not an id: ids are 64-bit integers", {"value": value})
    return value


Name = Annotated[str, AfterValidator(clean_name)]
FilterName = Annotated[str, AfterValidator(check_filter_name)]
RowId = Annotated[int, AfterValidator(check_row_id)]
Text = Annotated[str, AfterValidator(storable_text)]
