"""Field types shared by the wire shapes: ids, times, counts, priorities (pure)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

# Where OpenAPI keeps the components, and so where every reference between them points.
REF_TEMPLATE = "#/components/schemas/{name}"


def ref(name: str) -> dict[str, str]:
    """A JSON Schema reference to the component ``name``."""
    return {"$ref": REF_TEMPLATE.format(name=name)}


Id = Annotated[str, Meta(description="An opaque id (32 characters, time-ordered).")]
Time = Annotated[str, Meta(description="UTC, ISO-8601 with Z.",
                           extra_json_schema={"format": "date-time"})]
Count = Annotated[int, Meta(ge=0)]
Percent = Annotated[int, Meta(ge=0, le=100)]
Priority = Literal["high", "normal", "low"]
JsonObject = Annotated[dict[str, Any], Meta(description="Free-form JSON object.")]
