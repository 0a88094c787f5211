"""Codebook interleaving patterns and the multi-stream codebook language model (MusicGen)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import models, optim, parallel
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.models import (
    CODEBOOK_PATTERNS,
    MultiStreamLM,
    build_pattern,
    multi_stream_loss,
    pattern_length,
    pattern_mask,
    revert_pattern,
    sample_codebooks,
)
from lamina.nn import Module, functional_call


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The matrices are small: BLAS threads only contend with the other test processes."""
    with parallel.one_blas_thread():
        yield


def small_lm(**options) -> MultiStreamLM:
    settings = {"d_model": 16, "num_heads": 2, "num_layers": 1, "max_len": 32, **options}
    lamina.manual_seed(0)
    return MultiStreamLM(3, 5, **settings)


# -- patterns --------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", CODEBOOK_PATTERNS)
def test_patterns_round_trip_for_several_sizes(pattern):
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 4):
        for t in (1, 2, 5):
            codes = rng.integers(0, 7, (2, k, t))
            sequence = build_pattern(codes, pattern, 7)
            assert sequence.shape == (2, k, pattern_length(pattern, k, t))
            assert np.array_equal(sequence != 7, np.broadcast_to(pattern_mask(pattern, k, t), sequence.shape))
            assert (sequence != 7).sum() == codes.size
            assert np.array_equal(revert_pattern(sequence, pattern), codes)


def test_pattern_layouts_by_hand():
    codes = np.array([[[1, 2], [3, 4]]])                       # K = 2 codebooks, T = 2 frames
    s = 9
    assert build_pattern(codes, "parallel", s).tolist() == [[[1, 2], [3, 4]]]
    assert build_pattern(codes, "delay", s).tolist() == [[[1, 2, s], [s, 3, 4]]]
    assert build_pattern(codes, "flatten", s).tolist() == [[[1, s, 2, s], [s, 3, s, 4]]]


def test_pattern_errors():
    with pytest.raises(ValueError, match="special id"):
        build_pattern(np.array([[[1, 9]]]), "delay", 9)
    with pytest.raises(ValueError, match="pattern must be one of"):
        build_pattern(np.zeros((1, 2, 3), dtype=int), "spiral", 9)
    with pytest.raises(ShapeError, match="no flatten pattern"):
        revert_pattern(np.zeros((1, 2, 5), dtype=int), "flatten")


def test_delay_step_depends_only_on_codes_already_generated():
    """Perturbing code (k, t) changes the delay pattern's inputs and the scores only after step
    t + k, the step that holds it: every score of steps <= t + k is bit for bit the same."""
    model = small_lm()
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, (2, 3, 4))
    inputs, _ = model.inputs_and_targets(codes)
    with no_grad():
        base = model(inputs).numpy()
    for k, t in ((0, 0), (1, 2), (2, 1), (1, 3)):
        changed = codes.copy()
        changed[:, k, t] = (changed[:, k, t] + 1) % 5
        new_inputs, _ = model.inputs_and_targets(changed)
        step = t + k
        assert np.array_equal(new_inputs[:, :, :step + 1], inputs[:, :, :step + 1])
        with no_grad():
            scores = model(new_inputs).numpy()
        assert np.array_equal(scores[:, :, :step + 1], base[:, :, :step + 1])
        assert not np.allclose(scores[:, :, step + 1:], base[:, :, step + 1:])


# -- the loss --------------------------------------------------------------------------------
def numpy_multi_stream_loss(logits, targets, special):
    z = logits.astype(np.float64)
    log_p = z - z.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    per_codebook = []
    for k in range(targets.shape[1]):
        valid = targets[:, k] != special
        picked = np.take_along_axis(log_p[:, k], np.where(valid, targets[:, k], 0)[..., None], -1)[..., 0]
        per_codebook.append(-picked[valid].mean())
    return float(np.mean(per_codebook))


@pytest.mark.parametrize("pattern", CODEBOOK_PATTERNS)
def test_loss_masks_special_positions_as_a_numpy_reference(pattern):
    codes = np.random.default_rng(2).integers(0, 5, (2, 3, 4))
    targets = build_pattern(codes, pattern, 5)
    logits = randn(*targets.shape, 5, seed=3)
    got = multi_stream_loss(lamina.tensor(logits, dtype=np.float64), targets, 5).item()
    assert got == pytest.approx(numpy_multi_stream_loss(logits, targets, 5), rel=1e-12)
    special = (targets == 5)[..., None]
    moved = lamina.tensor(logits + 50 * randn(*logits.shape, seed=4) * special, dtype=np.float64,
                          requires_grad=True)
    loss = multi_stream_loss(moved, targets, 5)
    assert loss.item() == pytest.approx(got, rel=1e-12)
    loss.backward()
    assert np.all(moved.grad[np.broadcast_to(special, logits.shape)] == 0)

    model = small_lm(pattern=pattern)
    inputs, model_targets = model.inputs_and_targets(codes)
    assert np.array_equal(model_targets, targets)
    with no_grad():
        scores = model(inputs).numpy()
        assert model.loss(codes).item() == pytest.approx(numpy_multi_stream_loss(scores, targets, 5), rel=1e-5)


class EmbedThenHeads(Module):
    """The model's two multi-stream parts alone: summed codebook embeddings, then the K heads."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm.project(self.lm.embed(ids))


def torch_embed_then_heads(ids, table, weight, bias, num_codebooks, codebook_size):
    offsets = torch.arange(num_codebooks)[None, :, None] * (codebook_size + 1)
    h = table[torch.as_tensor(ids) + offsets].sum(1)
    n, s = h.shape[:2]
    return (h @ weight + bias).reshape(n, s, num_codebooks, codebook_size).permute(0, 2, 1, 3)


def _embed_heads_case():
    model = small_lm(d_model=4)
    ids = np.random.default_rng(5).integers(0, 6, (2, 3, 4))
    with no_grad():
        model(ids)
    names = ("lm.codebooks.weight", "lm.heads.weight", "lm.heads.bias")
    arrays = (randn(18, 4, seed=6), randn(4, 15, seed=7), randn(15, seed=8))
    return EmbedThenHeads(model), ids, names, arrays


def test_embedding_and_heads_gradients_float64():
    module, ids, names, arrays = _embed_heads_case()
    targets = build_pattern(np.random.default_rng(9).integers(0, 5, (2, 3, 2)), "delay", 5)

    def loss(*params):
        return multi_stream_loss(functional_call(module, dict(zip(names, params)), ids), targets, 5)

    assert check_gradients(loss, *arrays)


def test_embedding_and_heads_match_torch():
    module, ids, names, arrays = _embed_heads_case()
    targets = build_pattern(np.random.default_rng(9).integers(0, 5, (2, 3, 2)), "delay", 5)

    def ours(*params):
        scores = functional_call(module, dict(zip(names, params)), ids)
        return [scores, multi_stream_loss(scores, targets, 5)]

    def theirs(table, weight, bias):
        scores = torch_embed_then_heads(ids, table, weight, bias, 3, 5)
        y = torch.as_tensor(np.where(targets == 5, -100, targets))
        per_codebook = [torch.nn.functional.cross_entropy(scores[:, k].reshape(-1, 5), y[:, k].reshape(-1))
                        for k in range(3)]
        return [scores, torch.stack(per_codebook).mean()]

    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)


# -- generation ------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", CODEBOOK_PATTERNS)
def test_cached_generation_equals_uncached_at_temperature_zero(pattern):
    model = small_lm(pattern=pattern, num_classes=2)
    labels = np.array([0, 1, 2])
    cached = model.generate(4, labels=labels, temperature=0)
    assert cached.shape == (3, 3, 4) and cached.min() >= 0 and cached.max() < 5
    assert np.array_equal(cached, model.generate(4, labels=labels, temperature=0, use_cache=False))
    guided = model.generate(4, labels=labels, guidance_scale=3.0, temperature=0)
    assert np.array_equal(guided, model.generate(4, labels=labels, guidance_scale=3.0, temperature=0,
                                                 use_cache=False))


def test_guidance_scale_one_equals_conditional_sampling():
    model = small_lm(num_classes=3)
    labels = np.array([0, 2, 1, 2])
    plain = model.generate(5, labels=labels, temperature=1.0, top_k=3, generator=4)
    assert np.array_equal(plain, model.generate(5, labels=labels, guidance_scale=1.0, temperature=1.0, top_k=3,
                                                generator=4))
    assert not np.array_equal(plain, model.generate(5, labels=labels, guidance_scale=6.0, temperature=1.0,
                                                    top_k=3, generator=4))


def test_guidance_mixes_conditional_and_unconditional_scores():
    model = small_lm(num_classes=2)
    labels = np.array([1, 0])
    start = np.full((2, 3, 1), 5)
    with no_grad():
        cond = model(start, labels).numpy()[:, :, -1].astype(np.float64)
        uncond = model(start).numpy()[:, :, -1].astype(np.float64)
    got = model._step_scores(start, labels, 2.5, first=True)
    np.testing.assert_allclose(got, uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-6)


def test_sample_codebooks_keeps_to_top_k_and_temperature():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    draws = sample_codebooks(np.repeat(logits, 20000, axis=0), generator=0, top_k=2)
    assert set(np.unique(draws)) == {2, 3}
    assert np.mean(draws == 3) == pytest.approx(4 / 7, abs=0.02)
    cold = sample_codebooks(np.repeat(logits, 20000, axis=0), generator=1, temperature=0.5)
    assert np.mean(cold == 3) == pytest.approx(16 / 30, abs=0.02)
    assert sample_codebooks(logits, temperature=0).tolist() == [3]


def test_condition_dropout_replaces_labels_in_training_only():
    model = small_lm(num_classes=2, condition_dropout=1.0)
    codes = np.random.default_rng(3).integers(0, 5, (2, 3, 3))
    labels = np.array([0, 1])
    model.train()
    dropped = model.loss(codes, labels, generator=0).item()
    model.eval()
    assert dropped == pytest.approx(model.loss(codes).item(), rel=1e-6)
    assert dropped != pytest.approx(model.loss(codes, labels).item(), rel=1e-6)


def test_generated_codes_decode_to_audio_with_the_codec():
    codec = models.AudioCodec(num_quantizers=3, codebook_size=5, seed=0)
    model = small_lm()
    audio = model.generate_audio(codec, 4, num_samples=2, temperature=0)
    codes = model.generate(4, num_samples=2, temperature=0)
    assert audio.shape == (2, 4 * codec.hop_length, 1)
    np.testing.assert_array_equal(audio.numpy(), codec.decode(codes.transpose(0, 2, 1)).numpy())
    with pytest.raises(ValueError, match="codec codes"):
        model.generate_audio(models.AudioCodec(num_quantizers=2, codebook_size=5), 4)


def test_save_and_load_round_trip(tmp_path):
    model = small_lm(num_classes=2, pattern="flatten")
    ids = np.random.default_rng(4).integers(0, 6, (2, 3, 5))
    with no_grad():
        expected = model(ids, np.array([1, 0])).numpy()
    lamina.save(model, tmp_path / "lm.safetensors")
    twin = lamina.load(tmp_path / "lm.safetensors")
    assert type(twin) is MultiStreamLM and twin.get_config() == model.get_config() and twin.pattern == "flatten"
    with no_grad():
        assert np.array_equal(twin(ids, np.array([1, 0])).numpy(), expected)


def test_errors_name_the_model():
    model = small_lm()
    with pytest.raises(ShapeError, match="MultiStreamLM"):
        model(np.zeros((1, 2, 3), dtype=int))
    with pytest.raises(ValueError, match="num_classes=0"):
        model(np.zeros((1, 3, 3), dtype=int), np.array([0]))
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate(2, num_samples=1, guidance_scale=2.0)
    with pytest.raises(ValueError, match="max_len"):
        model.generate(40, num_samples=1)


# -- learning ------------------------------------------------------------------------------
def structured_codes(n, rng, num_codebooks=3, codebook_size=6, frames=6):
    """Codebook 0 uniform and independent at every frame; codebook k + 1 a fixed permutation of
    codebook k at the same frame."""
    perms = np.random.default_rng(11).permutation(np.tile(np.arange(codebook_size), (num_codebooks, 1)), axis=1)
    codes = np.empty((n, num_codebooks, frames), dtype=np.int64)
    codes[:, 0] = rng.integers(0, codebook_size, (n, frames))
    for k in range(1, num_codebooks):
        codes[:, k] = perms[k][codes[:, k - 1]]
    return codes


def trained_loss(pattern: str, steps: int) -> float:
    lamina.manual_seed(1)
    model = MultiStreamLM(3, 6, d_model=32, num_heads=2, num_layers=1, max_len=16, pattern=pattern)
    rng = np.random.default_rng(0)
    optimizer = optim.Adam(model, lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(structured_codes(32, rng)).backward()
        optimizer.step()
    model.eval()
    with no_grad():
        return model.loss(structured_codes(256, np.random.default_rng(99))).item()


def test_delay_pattern_learns_inter_codebook_structure_that_parallel_cannot():
    """Ideal losses: log 6 = 1.79 for parallel (every codebook of a frame is drawn at once from
    the past alone), log(6) / 3 = 0.60 for delay (codebooks 1, 2 follow from codebook 0)."""
    delay, parallel_ = trained_loss("delay", 60), trained_loss("parallel", 60)
    assert parallel_ > math.log(6) - 0.05
    assert delay < 0.9 < parallel_ - 0.8


# -- README ----------------------------------------------------------------------------------
def test_readme_example_runs():
    printed, names = run_readme_section("Music-style codes: several codebook streams")
    assert names["codes"].shape == (2, 2, 6)
    assert printed.split()[0] == "delay"
