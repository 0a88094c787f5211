"""JSON schemas as regular expressions, for generating JSON that validates (``outlines``'
``build_regex_from_schema``, a subset).

Supported: ``type`` object (``properties`` written in their order; those in ``required``
always, the others optionally; no other keys), string (``enum``, ``const``, ``pattern``,
``minLength``, ``maxLength``), integer, number, boolean, null, array (``items`` of one
schema, ``minItems``, ``maxItems``), ``enum`` and ``const`` of any JSON values, and
``anyOf`` / ``oneOf`` (alternatives). Annotations (``title``, ``description``, ``$schema``,
``$id``, ``default``, ``examples``) are ignored, and ``additionalProperties`` too (no extra
property is ever written). Any other keyword raises ValueError naming it.

Whitespace: ``whitespace`` is a regex allowed between the tokens of the JSON (after ``{``,
``[``, ``,`` and ``:`` and before ``}`` and ``]``); the default ``[ ]?`` allows one optional
space, ``""`` gives compact JSON. Strings hold any character but ``"``, ``\\`` and control
characters, or the escapes ``\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX``; ``pattern`` applies to
the raw characters between the quotes (as in outlines).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from lamina.text.constrained import RegexLogitsProcessor
from lamina.text.regex_fsm import escape_regex

__all__ = ["JSONSchemaLogitsProcessor", "regex_from_schema"]

STRING_CHAR = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})'
INTEGER = r"-?(?:0|[1-9][0-9]*)"
NUMBER = INTEGER + r"(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
BOOLEAN = "(?:true|false)"
NULL = "null"
_ANNOTATIONS = {"title", "description", "$schema", "$id", "default", "examples", "additionalProperties", "$comment"}
_KEYWORDS = {
    "object": {"type", "properties", "required"},
    "string": {"type", "pattern", "minLength", "maxLength", "enum", "const"},
    "integer": {"type", "enum", "const"},
    "number": {"type", "enum", "const"},
    "boolean": {"type", "enum", "const"},
    "null": {"type", "enum", "const"},
    "array": {"type", "items", "minItems", "maxItems"},
}
_WHO = "regex_from_schema"


def _count(schema: Mapping, name: str, default: int | None) -> int | None:
    value = schema.get(name, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{_WHO}: {name} must be an int >= 0, got {value!r}")
    return value


def _bounds(low: int, high: int | None) -> str:
    return f"{{{low},}}" if high is None else f"{{{low},{high}}}"


def _literal(value) -> str:
    return escape_regex(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class _Builder:
    def __init__(self, whitespace: str):
        self.ws = whitespace

    def build(self, schema, where: str) -> str:
        if not isinstance(schema, Mapping):
            raise ValueError(f"{_WHO}: the schema at {where} must be an object (dict), got {schema!r}")
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            if not isinstance(values, list) or not values:
                raise ValueError(f"{_WHO}: enum at {where} must be a non-empty list, got {values!r}")
            self._check(schema, set(_KEYWORDS.get(schema.get("type"), ())) | {"enum", "const", "type"}, where)
            return "(?:" + "|".join(_literal(v) for v in values) + ")"
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                self._check(schema, {combinator}, where)
                options = schema[combinator]
                if not isinstance(options, list) or not options:
                    raise ValueError(f"{_WHO}: {combinator} at {where} must be a non-empty list of schemas")
                return "(?:" + "|".join(self.build(s, f"{where}/{combinator}/{i}") for i, s in enumerate(options)) + ")"
        kind = schema.get("type")
        if not isinstance(kind, str) or kind not in _KEYWORDS:
            raise ValueError(f"{_WHO}: unsupported type {kind!r} at {where} (expected one of "
                             f"{sorted(_KEYWORDS)}, or enum, const, anyOf, oneOf)")
        self._check(schema, _KEYWORDS[kind], where)
        return getattr(self, "_" + kind)(schema, where)

    def _check(self, schema: Mapping, allowed: set[str], where: str) -> None:
        unknown = sorted(set(schema) - allowed - _ANNOTATIONS)
        if unknown:
            raise ValueError(f"{_WHO}: unsupported keyword(s) {unknown} at {where} (for type "
                             f"{schema.get('type')!r} the supported ones are {sorted(allowed)})")

    def _object(self, schema, where):
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, Mapping) or not isinstance(required, list):
            raise ValueError(f"{_WHO}: properties at {where} must be an object and required a list")
        missing = [name for name in required if name not in properties]
        if missing:
            raise ValueError(f"{_WHO}: required names {missing} at {where} are not among the properties")
        ws = self.ws
        items = [(f"{_literal(name)}{ws}:{ws}{self.build(sub, f'{where}/properties/{name}')}", name in required)
                 for name, sub in properties.items()]
        # after[i][first]: the properties from i on, ``first`` when none has been written yet
        rest_later, rest_first = "", ""
        for member, needed in reversed(items):
            later = f"{ws},{ws}{member}{rest_later}"
            first = f"{member}{rest_later}"
            if needed:
                rest_later, rest_first = later, first
            else:
                rest_later, rest_first = f"(?:{ws},{ws}{member})?{rest_later}", f"(?:{first}|{rest_first})"
        return rf"\{{{ws}{rest_first}{ws}\}}"

    def _string(self, schema, where):
        if "pattern" in schema:
            if "minLength" in schema or "maxLength" in schema:
                raise ValueError(f"{_WHO}: pattern with minLength/maxLength at {where} is not supported")
            return f'"(?:{schema["pattern"]})"'
        low = _count(schema, "minLength", 0)
        high = _count(schema, "maxLength", None)
        if high is not None and high < low:
            raise ValueError(f"{_WHO}: maxLength {high} < minLength {low} at {where}")
        return f'"{STRING_CHAR}{_bounds(low, high)}"'

    def _integer(self, schema, where):
        return INTEGER

    def _number(self, schema, where):
        return NUMBER

    def _boolean(self, schema, where):
        return BOOLEAN

    def _null(self, schema, where):
        return NULL

    def _array(self, schema, where):
        if "items" not in schema:
            raise ValueError(f"{_WHO}: an array at {where} needs an items schema")
        item = self.build(schema["items"], f"{where}/items")
        low, high = _count(schema, "minItems", 0), _count(schema, "maxItems", None)
        if high is not None and high < low:
            raise ValueError(f"{_WHO}: maxItems {high} < minItems {low} at {where}")
        ws = self.ws
        if high == 0:
            return rf"\[{ws}\]"
        more = f"(?:{ws},{ws}{item}){_bounds(max(low - 1, 0), None if high is None else high - 1)}"
        body = f"{item}{more}"
        return rf"\[{ws}{body}{ws}\]" if low >= 1 else rf"\[{ws}(?:{body})?{ws}\]"


def regex_from_schema(schema: Mapping | str, whitespace: str = r"[ ]?") -> str:
    """A regex whose full matches are JSON texts that validate against ``schema`` (a dict or
    its JSON text); see the module docstring for the subset and the whitespace policy."""
    if isinstance(schema, str):
        schema = json.loads(schema)
    return _Builder(whitespace).build(schema, "#")


class JSONSchemaLogitsProcessor(RegexLogitsProcessor):
    """Generate JSON that validates against ``schema``: a :class:`RegexLogitsProcessor` on
    :func:`regex_from_schema` (``whitespace`` as there)."""

    _who = "JSONSchemaLogitsProcessor"

    def __init__(self, schema: Mapping | str, tokenizer_or_vocab, eos_token_id, whitespace: str = r"[ ]?",
                 prompt_length: int | None = None):
        self.schema = schema
        super().__init__(regex_from_schema(schema, whitespace), tokenizer_or_vocab, eos_token_id, prompt_length)
