"""The serving engine's greedy outputs equal lamina's own greedy ``generate`` of each prompt run
alone: batched, arriving at different steps, under preemption by a tiny block pool, and with
prefix caching; plus sampling, stopping and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import models
from lamina.text import LLMEngine, SamplingParams

VOCAB = 53


def _tiny_gpt2(dtype=np.float64) -> models.GPT2:
    lamina.set_default_dtype(dtype)
    try:
        lamina.manual_seed(0)
        model = models.GPT2(vocab_size=VOCAB, n_positions=48, n_embd=24, n_layer=2, n_head=3)
        model.build((None, 1))
    finally:
        lamina.set_default_dtype(np.float32)
    for p in model.parameters():           # sharper scores than N(0, 0.02) weights: varied greedy texts
        p.data = p.data * 8
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return _tiny_gpt2()


def _prompts(lengths, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, size=n).tolist() for n in lengths]


def _greedy_alone(model, prompt, new_tokens: int) -> list[int]:
    with lamina.no_grad():
        ids = np.asarray(model.generate(np.array([prompt]), max_new_tokens=new_tokens))
    return ids[0, len(prompt):].tolist()


def test_each_prompt_alone_matches_generate(model):
    for prompt in _prompts([1, 4, 9]):
        engine = LLMEngine(model, max_num_seqs=1, num_blocks=8, block_size=4)
        assert engine.generate([prompt], max_new_tokens=8) == [_greedy_alone(model, prompt, 8)]


def test_a_batch_of_different_lengths_decodes_together(model):
    prompts = _prompts([3, 7, 5, 2], seed=1)
    engine = LLMEngine(model, max_num_seqs=4, num_blocks=32, block_size=4)
    for prompt in prompts:
        engine.add_request(prompt, max_new_tokens=6)
    steps = 0
    outputs = {}
    while engine.has_unfinished_requests():
        outputs.update((out.request_id, out.output_ids) for out in engine.step())
        steps += 1
    assert steps == 6                       # one token per sequence per step, all four at once
    assert [outputs[i] for i in range(4)] == [_greedy_alone(model, p, 6) for p in prompts]
    assert engine.block_manager.num_free_blocks == 32


def test_requests_arriving_at_different_steps(model):
    prompts = _prompts([4, 6, 2, 8, 3], seed=2)
    lengths = [5, 9, 4, 6, 7]
    engine = LLMEngine(model, max_num_seqs=3, num_blocks=24, block_size=3)
    arrivals = {0: [0, 1], 2: [2], 3: [3], 7: [4]}
    finished, step = {}, 0
    while step <= max(arrivals) or engine.has_unfinished_requests():
        for i in arrivals.get(step, []):
            assert engine.add_request(prompts[i], lengths[i]) == i
        for out in engine.step():
            assert out.finish_reason == "length" and out.prompt_ids == prompts[out.request_id]
            finished[out.request_id] = out.output_ids
        step += 1
    assert [finished[i] for i in range(5)] == [_greedy_alone(model, p, n) for p, n in zip(prompts, lengths)]


@pytest.mark.parametrize("num_blocks, block_size", [(6, 2), (4, 4)])
def test_a_tiny_block_pool_preempts_and_recomputes_without_changing_outputs(model, num_blocks, block_size):
    prompts = _prompts([3, 5, 2, 4], seed=3)
    engine = LLMEngine(model, max_num_seqs=4, num_blocks=num_blocks, block_size=block_size)
    outputs = engine.generate(prompts, max_new_tokens=7)
    assert engine.num_preemptions > 0
    assert outputs == [_greedy_alone(model, p, 7) for p in prompts]
    assert engine.block_manager.num_free_blocks == num_blocks


def test_prefix_caching_skips_shared_prefixes_and_keeps_outputs(model):
    system = _prompts([8], seed=4)[0]
    prompts = [system + tail for tail in _prompts([2, 3, 1], seed=5)]
    expected = [_greedy_alone(model, p, 5) for p in prompts]
    cached = LLMEngine(model, max_num_seqs=4, num_blocks=20, block_size=4)
    assert cached.generate(prompts, max_new_tokens=5) == expected
    plain = LLMEngine(model, max_num_seqs=4, num_blocks=20, block_size=4, enable_prefix_caching=False)
    assert plain.generate(prompts, max_new_tokens=5) == expected
    assert plain.num_prefill_tokens == sum(map(len, prompts))
    assert cached.num_prefill_tokens == sum(map(len, prompts)) - 2 * len(system)   # the later two reuse 2 blocks
    again = cached.generate([prompts[1]], max_new_tokens=5)                       # after the owners finished
    assert again == [expected[1]] and cached.num_prefill_tokens == sum(map(len, prompts)) - 2 * len(system) + 3


def test_float32_model_matches_generate():
    model = _tiny_gpt2(np.float32)
    prompts = _prompts([5, 2], seed=6)
    engine = LLMEngine(model, max_num_seqs=2, num_blocks=8, block_size=4)
    assert engine.key_cache.dtype == np.float32
    assert engine.generate(prompts, max_new_tokens=6) == [_greedy_alone(model, p, 6) for p in prompts]


def test_sampling_is_seeded_and_top_k_one_is_greedy_and_eos_stops(model):
    prompt = _prompts([4], seed=7)[0]
    engine = LLMEngine(model, max_num_seqs=2, num_blocks=16, block_size=4)
    hot = SamplingParams(temperature=1.5, seed=11)
    first, second = engine.generate([prompt, prompt], max_new_tokens=10, params=hot)
    assert first == second and len(set(first)) > 1
    greedy = _greedy_alone(model, prompt, 6)
    assert engine.generate([prompt], 6, SamplingParams(temperature=2.0, top_k=1, seed=1)) == [greedy]
    engine.add_request(prompt, 6, SamplingParams(eos_token_id=greedy[2]))
    (out,) = engine.step() + engine.step() + engine.step()
    assert out.output_ids == greedy[:greedy.index(greedy[2]) + 1] and out.finish_reason == "eos"


def test_bad_requests_are_rejected(model):
    engine = LLMEngine(model, max_num_seqs=2, num_blocks=3, block_size=4)
    with pytest.raises(ValueError, match="n_positions 48"):
        engine.add_request([1] * 40, max_new_tokens=9)
    with pytest.raises(ValueError, match="the pool has 3"):
        engine.add_request([1] * 10, max_new_tokens=3)
    with pytest.raises(ValueError, match="non-empty"):
        engine.add_request([], max_new_tokens=3)
    with pytest.raises(TypeError, match="GPT2"):
        LLMEngine(lamina.nn.Dense(3))


def test_readme_serving_example_runs():
    printed, names = run_readme_section("Serving: paged key/value cache, continuous batching, prefix caching")
    assert printed.splitlines() == ["True", "19", "2 5 length"]
    assert names["outputs"] == names["alone"]
