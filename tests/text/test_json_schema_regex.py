"""JSON schemas as regexes: hand-picked documents against a small validator, and generation
with random scores whose every finished output parses and validates."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lamina import nn
from lamina.text import JSONSchemaLogitsProcessor, compile_regex, generate_ids, regex_from_schema

EOS = 0
VOCAB = ["<eos>", "{", "}", "[", "]", '"', ":", ",", " ", "-", ".", "e", "+", *"0123456789", *"abnrtufls",
         "x", "é", '{"', '":', '",', '"}', ": ", ", ", "true", "false", "null", "12", "name", "age", "tags",
         "ok", '\\"', "\\n", "\\u00e9", "0.", "E-", "[]", "[1", "id", '"a"', '"b"', "nested"]
PERSON = {
    "title": "Person",
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 4},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1, "maxItems": 3},
        "nested": {"type": "object", "properties": {"id": {"type": "null"}, "x": {"type": "integer"}},
                   "required": ["id"]},
    },
    "required": ["name", "age", "tags"],
}
SCHEMAS = [
    PERSON,
    {"type": "array", "items": {"type": "integer"}, "maxItems": 4},
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
                                      "b": {"type": "string", "pattern": "[a-c]{1,3}"}}, "required": ["b"]},
    {"enum": ["ok", 12, None, True, [1]]},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}, "x": {"const": "é"}}},
]


class RandomScores(nn.Module):
    def __init__(self, vocab_size: int, seed: int):
        super().__init__()
        self.vocab_size, self.rng = vocab_size, np.random.default_rng(seed)

    def forward(self, ids):
        return self.rng.normal(scale=3.0, size=(*ids.shape, self.vocab_size))


def validates(value, schema) -> bool:
    """A validator for the supported subset, written from the JSON Schema specification."""
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return any(type(value) is type(v) and value == v for v in values)
    if "anyOf" in schema:
        return any(validates(value, s) for s in schema["anyOf"])
    kind = schema["type"]
    if kind == "object":
        return (isinstance(value, dict) and set(schema.get("required", [])) <= set(value)
                and set(value) <= set(schema.get("properties", {}))
                and all(validates(v, schema["properties"][k]) for k, v in value.items()))
    if kind == "array":
        return (isinstance(value, list) and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10 ** 9)
                and all(validates(v, schema["items"]) for v in value))
    if kind == "string":
        if not isinstance(value, str):
            return False
        if "pattern" in schema:
            return re.fullmatch(schema["pattern"], value) is not None
        return schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10 ** 9)
    return {"integer": lambda v: type(v) is int, "number": lambda v: type(v) in (int, float),
            "boolean": lambda v: type(v) is bool, "null": lambda v: v is None}[kind](value)


@pytest.mark.parametrize("text, valid", [
    ('{"name":"bo","age":3,"tags":["a"]}', True),
    ('{ "name": "b\\"o", "age": -30, "score": 1.5e+3, "ok": false, "tags": ["a", "b"], "nested": {"id": null}}',
     True),
    ('{"name":"bo","age":3,"tags":["a"],"nested":{"id":null,"x":0}}', True),
    ('{"name":"bo","age":3,"ok":true,"tags":["b","b","a"]}', True),
    ('{"name":"bobby","age":3,"tags":["a"]}', False),                 # maxLength 4
    ('{"name":"bo","age":3.5,"tags":["a"]}', False),                  # not an integer
    ('{"name":"bo","age":03,"tags":["a"]}', False),                   # leading zero
    ('{"name":"bo","age":3,"tags":[]}', False),                       # minItems 1
    ('{"name":"bo","age":3,"tags":["c"]}', False),                    # not in the enum
    ('{"age":3,"name":"bo","tags":["a"]}', False),                    # properties in order
    ('{"name":"bo","tags":["a"]}', False),                            # age required
    ('{"name":"bo","age":3,"tags":["a"],"nested":{}}', False),        # nested id required
    ('{"name":"bo",  "age":3,"tags":["a"]}', False),                  # one space at most
])
def test_person_regex_on_documents(text, valid):
    dfa = compile_regex(regex_from_schema(PERSON))
    assert dfa.fullmatch(text) == valid
    if valid:
        assert validates(json.loads(text), PERSON)


@pytest.mark.parametrize("number", ["0", "-0", "12", "1.25", "-3e7", "2E-2", "01", "1.", ".5", "1e", "+1", "--1"])
def test_numbers_follow_the_json_grammar(number):
    dfa = compile_regex(regex_from_schema({"type": "number"}))
    json_grammar = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
    assert dfa.fullmatch(number) == bool(re.fullmatch(json_grammar, number))


@pytest.mark.parametrize("schema_number", range(len(SCHEMAS)))
def test_random_generation_gives_valid_json(schema_number):
    schema = SCHEMAS[schema_number]
    processor = JSONSchemaLogitsProcessor(schema, VOCAB, eos_token_id=EOS)
    ended = 0
    for seed in range(8):
        out = generate_ids(RandomScores(len(VOCAB), seed), np.array([[1, 2], [3, 4]]), max_new_tokens=60,
                           do_sample=True, seed=seed, eos_token_id=EOS, logits_processor=[processor])
        for row in out[:, 2:].tolist():
            if EOS not in row:
                continue
            ended += 1
            text = "".join(VOCAB[t] for t in row[:row.index(EOS)])
            assert validates(json.loads(text), schema), text
    assert ended >= 8


def test_compact_whitespace():
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "boolean"}},
                                               "b": {"enum": [1, 2]}}, "required": ["a", "b"]}
    processor = JSONSchemaLogitsProcessor(schema, VOCAB, eos_token_id=EOS, whitespace="")
    for seed in range(6):
        out = generate_ids(RandomScores(len(VOCAB), seed), np.array([[1]]), max_new_tokens=60, do_sample=True,
                           seed=seed, eos_token_id=EOS, logits_processor=[processor])
        row = out[0, 1:].tolist()
        if EOS in row:
            text = "".join(VOCAB[t] for t in row[:row.index(EOS)])
            assert text == json.dumps(json.loads(text), separators=(",", ":"))


@pytest.mark.parametrize("schema, message", [
    ({"type": "string", "format": "date"}, r"unsupported keyword\(s\) \['format'\] at #"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}}, r"\['minimum'\] at #/properties/a"),
    ({"type": ["string", "null"]}, "unsupported type"),
    ({"$ref": "#/defs/a"}, "unsupported type"),
    ({"type": "array"}, "needs an items schema"),
    ({"type": "object", "properties": {}, "required": ["a"]}, "not among the properties"),
    ({"type": "string", "minLength": 3, "maxLength": 2}, "maxLength 2 < minLength 3"),
])
def test_unsupported_schemas_raise(schema, message):
    with pytest.raises(ValueError, match=message):
        regex_from_schema(schema)
