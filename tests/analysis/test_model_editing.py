"""Causal tracing, ROME and MEMIT: the closed-form updates against NumPy solutions of their
least-squares problems, the statistics and the value objective against NumPy and torch
rewrites, and edits of facts a tiny GPT-2 has memorised."""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.analysis import (
    EditRequest,
    ValueObjective,
    causal_trace,
    memit_edit,
    memit_update,
    rank_one_update,
    rome_edit,
    run_with_cache,
    second_moment_statistics,
    traced_probability,
)
from lamina.autograd import grad, tensor

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
SUBJECTS, RELATION, FIRST_OBJECT, VOCAB = 10, 10, 11, 24


def _positive_definite(rng, size):
    a = rng.standard_normal((size, size))
    return a @ a.T + 0.5 * np.eye(size)


def test_rank_one_update_solves_the_constrained_least_squares_problem():
    rng = np.random.default_rng(0)
    inner, outer = 6, 4
    weight, bias = rng.standard_normal((inner, outer)), rng.standard_normal(outer)
    key, value, C = rng.standard_normal(inner), rng.standard_normal(outer), _positive_definite(rng, inner)
    delta = rank_one_update(weight, bias, key, value, C)
    # minimise (w'_j - w_j)^T C (w'_j - w_j) subject to k* . w'_j = v*_j - b_j, column by column (KKT system)
    kkt = np.block([[2 * C, key[:, None]], [key[None, :], np.zeros((1, 1))]])
    expected = np.stack([np.linalg.solve(kkt, np.concatenate([2 * C @ weight[:, j], [value[j] - bias[j]]]))[:inner]
                         for j in range(outer)], axis=1)
    np.testing.assert_allclose(weight + delta, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(key @ (weight + delta) + bias, value, rtol=1e-12, atol=1e-12)
    direction = np.linalg.solve(C, key)
    others = rng.standard_normal((5, inner))
    others -= np.outer(others @ direction, direction) / (direction @ direction)     # C-orthogonal to k*
    np.testing.assert_allclose(others @ (weight + delta), others @ weight, rtol=1e-10, atol=1e-10)


def test_memit_update_is_the_least_squares_solution():
    rng = np.random.default_rng(1)
    inner, outer, n, weight = 7, 3, 4, 2.5
    keys, residuals = rng.standard_normal((n, inner)), rng.standard_normal((n, outer))
    C = _positive_definite(rng, inner)
    delta = memit_update(keys, residuals, C, weight)
    root = np.linalg.cholesky(C)                       # lambda tr(dW^T C dW) = ||sqrt(lambda) L^T dW||^2
    system = np.concatenate([np.sqrt(weight) * root.T, keys])
    wanted = np.concatenate([np.zeros((inner, outer)), residuals])
    np.testing.assert_allclose(delta, np.linalg.lstsq(system, wanted, rcond=None)[0], rtol=1e-9, atol=1e-10)


def tiny_gpt2(n_layer=3):
    lamina.manual_seed(0)
    return models.GPT2(vocab_size=VOCAB, n_positions=8, n_embd=32, n_layer=n_layer, n_head=2, embd_pdrop=0.0,
                       resid_pdrop=0.0, attn_pdrop=0.0)


@pytest.fixture(scope="module")
def facts():
    """A tiny GPT-2 trained (about a second) on ten facts "relation subject -> object": the prompt
    ends with the subject, whose last token is where the model must recall the object."""
    model = tiny_gpt2()
    objects = np.random.default_rng(0).permutation(SUBJECTS) + FIRST_OBJECT
    prompts = np.stack([np.full(SUBJECTS, RELATION), np.arange(SUBJECTS)], axis=1)
    optimizer = optim.Adam(model, lr=0.01)
    for _ in range(250):
        loss = F.categorical_cross_entropy(model(prompts)[:, -1], objects, from_logits=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rng = np.random.default_rng(1)
    text = [rng.integers(0, VOCAB, size=(16, 8)) for _ in range(8)] + [prompts]
    assert (_predictions(model, prompts) == objects).all()
    return model, prompts, objects, text


def _predictions(model, prompts):
    with lamina.no_grad():
        return model(prompts).numpy()[:, -1].argmax(-1)


def test_second_moment_statistics_match_a_numpy_accumulation(facts):
    model, _, _, text = facts
    C = second_moment_statistics(model, 1, text[:3])
    keys = np.concatenate([run_with_cache(model, ids, ["h.1.linear1"])[1]["h.1.linear1"].reshape(-1, 128)
                           for ids in text[:3]]).astype(np.float64)
    np.testing.assert_allclose(C, keys.T @ keys / len(keys), rtol=1e-10, atol=1e-12)


def test_causal_trace_restoring_everything_or_nothing(facts):
    model, prompts, objects, _ = facts
    trace = causal_trace(model, prompts[3], [1], objects[3], noise=0.5, kind="hidden", samples=6)
    scores = np.exp(run_with_cache(model, prompts[3:4], [])[0][0, -1].astype(np.float64))
    clean = scores[objects[3]] / scores.sum()
    np.testing.assert_allclose(trace.clean_probability, clean, rtol=1e-6)
    assert trace.corrupted_probability < clean - 0.1
    everything = [("drop", 1)]                         # the corrupted embedding, restored
    np.testing.assert_allclose(traced_probability(model, prompts[3], [1], objects[3], 0.5, everything, samples=6),
                               clean, rtol=1e-6)
    np.testing.assert_allclose(traced_probability(model, prompts[3], [1], objects[3], 0.5, samples=6),
                               trace.corrupted_probability, rtol=1e-12)
    np.testing.assert_allclose(trace.scores[-1, 1], clean, rtol=1e-6)   # the last hidden state decides the output
    np.testing.assert_allclose(trace.scores[:, 0], trace.corrupted_probability, rtol=1e-6)  # before the subject
    np.testing.assert_allclose(trace.scores[:, 1], clean, rtol=1e-6)    # the only corrupted position, restored
    mlp = causal_trace(model, prompts[3], [1], objects[3], noise=0.5, kind="mlp", window=2, samples=6)
    assert mlp.scores.shape == (3, 2) and mlp.names == ["h.0.dropout2", "h.1.dropout2", "h.2.dropout2"]


def _torch_objective(model, request, prefixes, delta, kl_weight, weight_decay):
    """L(delta) for an edit of the last block's MLP output: only ln_f and the unembedding follow it."""
    objective = ValueObjective(model, "h.1.linear2", request, prefixes, kl_weight, weight_decay)
    ids, where = objective.ids, objective.edit_positions
    hidden = torch.tensor(run_with_cache(model, ids, ["h.1"])[1]["h.1"])
    table = torch.tensor(model.wte.weight.data)
    gain, shift = torch.tensor(model.ln_f.weight.data), torch.tensor(model.ln_f.bias.data)

    def log_p(d):
        moved = hidden.clone()
        moved[np.arange(len(ids)), where] += d
        normed = torch.nn.functional.layer_norm(moved, (moved.shape[-1],), gain, shift, eps=1e-5)
        return torch.log_softmax(normed @ table.T, -1)
    contexts = len(prefixes) + 1
    target, prompt = list(request.target), len(request.prompt)
    edited, original = log_p(delta), log_p(torch.zeros_like(delta))
    nll = 0
    for row, prefix in enumerate([[]] + list(prefixes)):
        start = len(prefix) + prompt - 1
        nll = nll - sum(edited[row, start + j, t] for j, t in enumerate(target)) / len(target) / contexts
    last = len(request.essence) - 1
    p = original[-1, last].exp()
    kl = (p * (original[-1, last] - edited[-1, last])).sum()
    norm = torch.tensor(objective.reference_norm, dtype=torch.float64)
    return objective, nll + kl_weight * kl + weight_decay * (delta ** 2).sum() / norm ** 2


def test_value_objective_matches_a_torch_rewrite_in_float64():
    model = tiny_gpt2(n_layer=2)
    model.build((None, 1))
    model.double()
    request = EditRequest([RELATION, 4, 2], 1, [13, 15], essence=[4, 7, 9], essence_subject_position=0)
    prefixes = [[5], [6, 8]]
    values = 0.05 * np.random.default_rng(2).standard_normal(32)
    reference = torch.tensor(values, requires_grad=True)
    objective, expected = _torch_objective(model, request, prefixes, reference, 0.3, 0.7)
    expected.backward()
    delta = tensor(values, requires_grad=True, dtype=np.float64)
    loss = objective(delta)
    (gradient,) = grad(loss, [delta])
    np.testing.assert_allclose(float(loss.numpy()), expected.item(), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(gradient), reference.grad.numpy(), rtol=1e-8, atol=1e-12)
    expected_norm = np.linalg.norm(run_with_cache(model, objective.ids, ["h.1.linear2"])[1]["h.1.linear2"]
                                   [np.arange(3), objective.edit_positions[:3]].mean(0))
    np.testing.assert_allclose(objective.reference_norm, expected_norm, rtol=1e-12)


def test_rome_rewrites_one_fact_and_undo_restores_the_weights(facts):
    model, prompts, objects, text = facts
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    C = second_moment_statistics(model, 1, text)
    new = int(objects[4])
    edit = rome_edit(model, 1, prompts[3], 1, [new], C)
    after = _predictions(model, prompts)
    assert after[3] == new
    assert (np.delete(after, 3) == np.delete(objects, 3)).sum() >= 8
    assert list(edit.deltas) == ["h.1.linear2"] and np.linalg.matrix_rank(edit.deltas["h.1.linear2"]) == 1
    value = edit.keys[0] @ before["h.1.linear2.weight"].astype(np.float64) + before["h.1.linear2.bias"]
    assert edit.losses[0][-1] < edit.losses[0][0]
    assert np.linalg.norm(edit.values[0] - value) > 0
    edit.undo()
    for name, p in model.named_parameters():
        assert np.array_equal(p.data, before[name]), name
    assert (_predictions(model, prompts) == objects).all()


def test_rome_key_averages_the_prefixed_contexts_and_the_edit_writes_the_value_there(facts):
    model, prompts, objects, text = facts
    C = second_moment_statistics(model, 1, text)
    prefixes = [[5], [7, 8]]
    contexts = [list(prompts[6])] + [prefix + list(prompts[6]) for prefix in prefixes]
    keys = [run_with_cache(model, np.array([ids]), ["h.1.linear1"])[1]["h.1.linear1"][0, -1] for ids in contexts]
    edit = rome_edit(model, 1, prompts[6], 1, [int(objects[0])], C, prefixes=prefixes, steps=5)
    try:
        np.testing.assert_allclose(edit.keys[0], np.mean(keys, axis=0), rtol=1e-5, atol=1e-6)
        layer = model.h[1].linear2
        written = edit.keys[0] @ layer.weight.data.astype(np.float64) + layer.bias.data
        np.testing.assert_allclose(written, edit.values[0], rtol=1e-4, atol=1e-4)
    finally:
        edit.undo()


def _subject_outputs(model, prompts):
    """Block 1's output at each prompt's subject (position 1), one prompt at a time as memit_edit reads
    them: a batch of several may take another float32 GEMM kernel, and the normal equations magnify
    such last-bit differences past the tolerances below."""
    return np.stack([run_with_cache(model, prompt[None], ["h.1"])[1]["h.1"][0, 1] for prompt in prompts]
                    ).astype(np.float64)


def test_memit_rewrites_several_facts_over_layers_and_undoes(facts):
    model, prompts, objects, text = facts
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    C = {layer: second_moment_statistics(model, layer, text) for layer in (0, 1)}
    edited = [2, 5, 7]
    new = [int(objects[(i + 3) % SUBJECTS]) for i in edited]
    hidden = _subject_outputs(model, prompts[edited])
    edit = memit_edit(model, [0, 1], [(prompts[i], 1, [t]) for i, t in zip(edited, new)], C)
    first = memit_update(edit.keys[0], (edit.values - hidden) / 2, C[0])    # half the way at the first layer
    np.testing.assert_allclose(edit.deltas["h.0.linear2"], first, rtol=1e-6, atol=1e-9)
    after = _predictions(model, prompts)
    assert list(after[edited]) == new
    kept = np.setdiff1d(np.arange(SUBJECTS), edited)
    assert (after[kept] == objects[kept]).sum() >= 6
    assert set(edit.deltas) == {"h.0.linear2", "h.1.linear2"} and edit.keys.shape == (2, 3, 128)
    edit.undo()
    for name, p in model.named_parameters():
        assert np.array_equal(p.data, before[name]), name
    weight = model.h[0].linear2.weight
    weight.data[...] = (weight.data.astype(np.float64) + edit.deltas["h.0.linear2"]).astype(weight.data.dtype)
    try:                                              # the last layer writes what the first one left
        middle = _subject_outputs(model, prompts[edited])
        last = memit_update(edit.keys[1], edit.values - middle, C[1])
        np.testing.assert_allclose(edit.deltas["h.1.linear2"], last, rtol=1e-6, atol=1e-9)
    finally:
        weight.data[...] = before["h.0.linear2.weight"]


def test_memit_on_one_layer_writes_the_normal_equations_solution(facts):
    model, prompts, objects, text = facts
    C = second_moment_statistics(model, 1, text)
    requests = [(prompts[i], 1, [int(objects[(i + 1) % SUBJECTS])]) for i in (0, 6)]
    hidden = _subject_outputs(model, prompts[[0, 6]])
    edit = memit_edit(model, [1], requests, {1: C}, covariance_weight=3.0)
    try:
        keys = edit.keys[0]
        expected = np.linalg.solve(3.0 * C + keys.T @ keys, keys.T @ (edit.values - hidden))
        np.testing.assert_allclose(edit.deltas["h.1.linear2"], expected, rtol=1e-6, atol=1e-9)
        after = run_with_cache(model, prompts[[0, 6]], ["h.1"])[1]["h.1"][:, 1].astype(np.float64)
        np.testing.assert_allclose(after - hidden, keys @ expected, rtol=1e-3, atol=1e-4)
    finally:
        edit.undo()


def test_readme_model_editing_example_runs_and_edits_come_undone():
    section = README.read_text().split("### Locating and editing facts", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), names)
    assert "True 9" in printed.getvalue() and "[ True  True  True] 7" in printed.getvalue()
    assert names["trace"].scores.shape == (3, 2)
    assert (names["answers"]() == names["objects"]).all()            # both edits undone
