"""The serving engine on Llama-layout models: its greedy outputs equal lamina's own greedy
``generate`` of each prompt run alone (grouped-query attention, batches arriving at different
steps, preemption, prefix caching, rope scaling, tied heads, Qwen2's biases, Mistral), refused
variants name what is missing, and per-request logits processors: regex-constrained outputs
match their pattern and equal ``generate_ids`` with the same processor."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import lamina
from lamina import models
from lamina.text import JSONSchemaLogitsProcessor, LLMEngine, RegexLogitsProcessor, SamplingParams, generate_ids

VOCAB = 40
SIZES = {"vocab_size": VOCAB, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 48, "rope_theta": 500.0}


def _build(kind=models.Llama, **options):
    lamina.set_default_dtype(np.float64)
    try:
        lamina.manual_seed(0)
        model = kind(**{**SIZES, **options})
        model.build((None, 1))
    finally:
        lamina.set_default_dtype(np.float32)
    for p in model.parameters():           # sharper scores than N(0, 0.02) weights: varied greedy texts
        p.data = p.data * 8
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return _build()


def _prompts(lengths, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=n).tolist() for n in lengths]


def _greedy_alone(model, prompt, new_tokens: int) -> list[int]:
    with lamina.no_grad():
        ids = np.asarray(model.generate(np.array([prompt]), max_new_tokens=new_tokens))
    return ids[0, len(prompt):].tolist()


def test_grouped_query_llama_prompts_alone_and_batched(model):
    assert model.num_key_value_heads < model.num_attention_heads
    prompts = _prompts([1, 4, 9], seed=1)
    expected = [_greedy_alone(model, p, 7) for p in prompts]
    assert len({tuple(e) for e in expected}) == 3 and len(set(expected[2])) > 1
    for prompt, want in zip(prompts, expected):
        engine = LLMEngine(model, max_num_seqs=1, num_blocks=8, block_size=4)
        assert engine.key_cache.shape[3] == 2
        assert engine.generate([prompt], max_new_tokens=7) == [want]
    assert LLMEngine(model, max_num_seqs=3, num_blocks=16, block_size=4).generate(prompts, 7) == expected


def test_requests_arriving_at_different_steps(model):
    prompts = _prompts([4, 6, 2, 8, 3], seed=2)
    lengths = [5, 9, 4, 6, 7]
    engine = LLMEngine(model, max_num_seqs=3, num_blocks=24, block_size=3)
    arrivals = {0: [0, 1], 2: [2], 3: [3], 7: [4]}
    finished, step = {}, 0
    while step <= max(arrivals) or engine.has_unfinished_requests():
        for i in arrivals.get(step, []):
            engine.add_request(prompts[i], lengths[i])
        finished.update((out.request_id, out.output_ids) for out in engine.step())
        step += 1
    assert [finished[i] for i in range(5)] == [_greedy_alone(model, p, n) for p, n in zip(prompts, lengths)]


def test_preemption_and_prefix_caching_keep_outputs(model):
    prompts = _prompts([3, 5, 2, 4], seed=3)
    engine = LLMEngine(model, max_num_seqs=4, num_blocks=6, block_size=2)
    assert engine.generate(prompts, max_new_tokens=7) == [_greedy_alone(model, p, 7) for p in prompts]
    assert engine.num_preemptions > 0 and engine.block_manager.num_free_blocks == 6
    system = _prompts([8], seed=4)[0]
    shared = [system + tail for tail in _prompts([2, 3], seed=5)]
    cached = LLMEngine(model, max_num_seqs=4, num_blocks=20, block_size=4)
    assert cached.generate(shared, max_new_tokens=5) == [_greedy_alone(model, p, 5) for p in shared]
    assert cached.num_prefill_tokens == sum(map(len, shared)) - len(system)


@pytest.mark.parametrize("kind, options", [
    (models.Llama, {"tie_word_embeddings": True, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    (models.Llama, {"rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    (models.Qwen2, {}),
    (models.Mistral, {"sliding_window": 64}),
])
def test_variants_of_the_llama_layout(kind, options):
    model = _build(kind, **options)
    prompts = _prompts([3, 6], seed=6)
    engine = LLMEngine(model, max_num_seqs=2, num_blocks=8, block_size=4)
    assert engine.generate(prompts, max_new_tokens=6) == [_greedy_alone(model, p, 6) for p in prompts]


def test_unsupported_variants_are_refused_by_name():
    with pytest.raises(ValueError, match="Mistral: the paged forward lacks a sliding window of 4 keys"):
        LLMEngine(_build(models.Mistral, sliding_window=4))
    with pytest.raises(ValueError, match="Llama: .*'dynamic' rope scaling"):
        LLMEngine(_build(rope_scaling={"rope_type": "dynamic", "factor": 2.0}))
    with pytest.raises(TypeError, match="Gemma is built on Llama but changes its layout"):
        LLMEngine(models.gemma("tiny"))
    with pytest.raises(ValueError, match="build the model first"):
        LLMEngine(models.Llama(**SIZES))
    with pytest.raises(ValueError, match="max_position_embeddings 48"):
        LLMEngine(_build()).add_request([1] * 40, max_new_tokens=9)


# a small vocabulary of strings: id 0 is the end token
STRINGS = ["", *"0123456789", *"abcdefghij", "ab", "ba", "a1", "-", "--", "c-", "-0", "99", "x", "y", "z",
           "xy", "bc", "00", "7-", "q", "r", "s", "t"]
PATTERN = r"[a-c]{2,3}-[0-9]{1,2}"


def test_regex_constrained_requests_match_their_pattern_and_generate_ids(model):
    assert len(STRINGS) == VOCAB
    constraint = RegexLogitsProcessor(PATTERN, STRINGS, eos_token_id=0)
    constrained = SamplingParams(eos_token_id=0, logits_processors=[constraint])
    prompts = _prompts([3, 7, 5], seed=8)
    engine = LLMEngine(model, max_num_seqs=4, num_blocks=24, block_size=4)
    free = engine.add_request(prompts[0], max_new_tokens=6)            # unconstrained, in the same batch
    ids = [engine.add_request(prompts[0], 10, constrained)]
    outputs = {}
    for step in range(40):
        if step == 2:
            ids += [engine.add_request(p, 10, constrained) for p in prompts[1:]]
        outputs.update((out.request_id, out) for out in engine.step())
    assert outputs[free].output_ids == _greedy_alone(model, prompts[0], 6)
    for prompt, request in zip(prompts, ids):
        out = outputs[request]
        assert out.finish_reason == "eos" and out.output_ids[-1] == 0
        assert re.fullmatch(PATTERN, "".join(STRINGS[t] for t in out.output_ids))
        with lamina.no_grad():
            reference = np.asarray(generate_ids(model, np.array([prompt]), max_new_tokens=10, eos_token_id=0,
                                                logits_processor=[RegexLogitsProcessor(PATTERN, STRINGS, 0)]))
        assert out.output_ids == reference[0, len(prompt):].tolist()


JSON_STRINGS = ["", "{", "}", '"', "a", ":", '"a"', '{"a":', " ", *"0123456789", "-", "12", "3}",
                *"klmnopqrstuvwxyz", "kl", "mn"]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_json_schema_requests_give_valid_json(model):
    assert len(JSON_STRINGS) == VOCAB
    params = SamplingParams(eos_token_id=0, logits_processors=[JSONSchemaLogitsProcessor(SCHEMA, JSON_STRINGS, 0)])
    prompts = _prompts([4, 2], seed=10)
    engine = LLMEngine(model, max_num_seqs=2, num_blocks=16, block_size=4)
    outputs = engine.generate(prompts, max_new_tokens=14, params=params)
    for prompt, output in zip(prompts, outputs):
        assert output[-1] == 0 and isinstance(json.loads("".join(JSON_STRINGS[t] for t in output))["a"], int)
        with lamina.no_grad():
            reference = np.asarray(generate_ids(model, np.array([prompt]), max_new_tokens=14, eos_token_id=0,
                                                logits_processor=[JSONSchemaLogitsProcessor(SCHEMA, JSON_STRINGS, 0)]))
        assert output == reference[0, len(prompt):].tolist()


def test_repetition_penalty_and_top_p(model):
    prompt = _prompts([5], seed=9)[0]
    engine = LLMEngine(model, max_num_seqs=2, num_blocks=16, block_size=4)
    (penalised,) = engine.generate([prompt], 8, SamplingParams(repetition_penalty=1.8))
    with lamina.no_grad():
        reference = np.asarray(generate_ids(model, np.array([prompt]), max_new_tokens=8, repetition_penalty=1.8))
    assert penalised == reference[0, len(prompt):].tolist() != _greedy_alone(model, prompt, 8)
    tiny_nucleus = SamplingParams(temperature=1.0, top_p=1e-6, seed=3)     # only the likeliest token stays
    assert engine.generate([prompt], 8, tiny_nucleus) == [_greedy_alone(model, prompt, 8)]
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(TypeError, match="callable"):
        SamplingParams(logits_processors=[3])
