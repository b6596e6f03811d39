"""Structured output: `response_format` as a JSON schema that a llama.cpp grammar enforces.

    {"type": "text"}                       free text (the default)
    {"type": "json_object"}                any JSON object
    {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}   that schema

The grammar comes from llama-cpp-python's JSON-schema converter (engine.schema_to_grammar), so
every answer that ends with finish_reason "stop" parses and validates. The converter cannot
express every JSON-schema keyword: `check_schema` refuses the others with a 400 that names them
(a keyword silently dropped would give answers that do not validate).
"""

from __future__ import annotations

from .errors import bad_request
from .schema import ChatRequest

# Keywords the grammar enforces, and annotations that constrain nothing.
ENFORCED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "$defs",
    "definitions", "pattern", "format", "minLength", "maxLength",
}  # fmt: skip
ANNOTATIONS = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment",
    "deprecated", "readOnly", "writeOnly", "strict",
}  # fmt: skip
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def check_schema(schema, where: str) -> None:
    """400 naming the first keyword or value the grammar cannot enforce."""
    if not isinstance(schema, dict):
        raise bad_request(f"{where} must be a JSON schema object, not {type(schema).__name__}.")
    for key in schema:
        if key not in ENFORCED and key not in ANNOTATIONS:
            raise bad_request(
                f"{where} uses the JSON-schema keyword '{key}', which the local server cannot "
                "enforce while generating (its grammar supports type, properties, required, "
                "additionalProperties, items, minItems/maxItems, enum, const, anyOf/oneOf, $ref, "
                "pattern, format and minLength/maxLength). Remove it and check that rule in "
                "your own code.",
                "unsupported_schema",
            )
    _check_values(schema, where)
    for key in SUBSCHEMA_LISTS:
        subs = schema.get(key, [])
        if not isinstance(subs, list):
            raise bad_request(f"{where}.{key} must be a list of schemas.", "unsupported_schema")
        for i, sub in enumerate(subs):
            check_schema(sub, f"{where}.{key}[{i}]")
    for key in SUBSCHEMA_MAPS:
        subs = schema.get(key, {})
        if not isinstance(subs, dict):
            raise bad_request(f"{where}.{key} must be an object of schemas.", "unsupported_schema")
        for name, sub in subs.items():
            check_schema(sub, f"{where}.{key}.{name}")
    required = schema.get("required", [])
    if not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
        raise bad_request(f"{where}.required must be a list of names.", "unsupported_schema")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            check_schema(schema[key], f"{where}.{key}")
    if isinstance(schema.get("items"), list):
        for i, sub in enumerate(schema["items"]):
            check_schema(sub, f"{where}.items[{i}]")


def _check_values(schema: dict, where: str) -> None:
    def refuse(what: str) -> None:
        raise bad_request(f"{where}: {what}", "unsupported_schema")

    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [] if kinds is None else [kinds]:
        if not isinstance(kind, str) or kind not in TYPES:
            refuse(f"'type' is {kind!r}, not one of {', '.join(sorted(TYPES))}.")
    if "format" in schema and not (
        isinstance(schema["format"], str) and schema["format"] in FORMATS
    ):
        refuse(f"the string format {schema['format']!r} cannot be enforced (supported: "
               f"{', '.join(sorted(FORMATS))}).")  # fmt: skip
    pattern = schema.get("pattern")
    if pattern is not None and not (
        isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")
    ):
        refuse("a 'pattern' must be anchored, starting with ^ and ending with $.")
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        refuse(
            f"'$ref' {ref!r} is not a local reference (#/$defs/...); remote schemas are not fetched."
        )
    for key in ("minItems", "maxItems", "minLength", "maxLength"):
        value = schema.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            refuse(f"'{key}' must be a whole number, 0 or more.")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        refuse("'enum' must be a non-empty list of values.")
    items = schema.get("items", {})
    if not isinstance(items, dict) and not (isinstance(items, list) and items):
        refuse("'items' must be a schema (or a non-empty list of schemas).")
    if not isinstance(schema.get("additionalProperties", True), (bool, dict)):
        refuse("'additionalProperties' must be true, false or a schema.")


def response_schema(req: ChatRequest) -> dict | None:
    """The JSON schema the answer must follow, or None for free text."""
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None:
        raise bad_request(
            "response_format type 'json_schema' needs a json_schema object: "
            '{"name": ..., "schema": {...}}.'
        )
    check_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")
    return fmt.json_schema.schema_
