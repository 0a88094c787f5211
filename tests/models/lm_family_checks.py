"""Checks shared by the tests of the Llama-like families (Qwen2, Gemma, Phi-3, Mixtral) and
GPT-NeoX against their PyTorch references: logits and every gradient, greedy decoding of a
left-padded batch, and the loaders' errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_checks import assert_gradients_match_the_table, backward_with_one_upstream
from torch_lm_families_reference import DecoderForCausalLM

import lamina
from helpers import assert_close


def loaded_pair(model_class, load, family: str, config: dict, seed: int = 0):
    """The float64 PyTorch reference of ``family`` made with ``config`` after seeding torch with
    ``seed``, and a lamina ``model_class(**config)`` given its weights by ``load``: (model, reference)."""
    torch.manual_seed(seed)
    reference = DecoderForCausalLM({**config, "family": family}).double()
    model = model_class(**config)
    load(model, reference.state_dict())
    return model, reference


def assert_logits_and_gradients_match(model, reference, table, vocab_size: int, steps: int = 9) -> None:
    """Two rows of ``steps`` random ids: the logits to 1e-10, and the gradient of every
    parameter (through ``table``, lamina key -> Hugging Face weight) to 1e-9."""
    ids = np.random.default_rng(0).integers(0, vocab_size, size=(2, steps))
    ours = model(ids)
    theirs = reference(torch.tensor(ids))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "logits")
    backward_with_one_upstream(ours, theirs)
    prefix = next(iter(dict(reference.named_children())))          # 'model' or 'gpt_neox'
    grads = {key.removeprefix(prefix + "."): value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, table, grads, every_parameter=True)


def assert_padding_matches(model, reference) -> None:
    """Left padding hidden by key_mask gives the reference's logits at the real tokens."""
    ids = np.array([[0, 3, 4, 5, 6], [0, 0, 7, 8, 9]])
    mask = np.array([[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    ours = model(ids, key_mask=mask.astype(bool)).numpy()
    theirs = reference(torch.tensor(ids), torch.tensor(mask)).detach().numpy()
    assert_close(ours[mask.astype(bool)], theirs[mask.astype(bool)], 1e-10, "logits at real tokens")


def assert_left_padded_greedy_generation(model) -> None:
    """``generate`` on a left-padded batch (cached, key_mask and position ids) continues each
    row as greedy decoding of that row alone does."""
    model.eval()
    prompts = [[5, 6, 7, 8], [9, 10]]
    batch = model.generate(np.array([prompts[0], [0, 0, *prompts[1]]]), attention_mask=[[1] * 4, [0, 0, 1, 1]],
                           max_new_tokens=5)
    for row, prompt in zip(batch, prompts):
        alone = model.generate(np.array([prompt]), max_new_tokens=5)[0]
        assert list(row[-5:]) == list(alone[-5:])


def assert_loader_errors(load, make_model, arrays: dict, missing: str, misshaped_model, misshaped_key: str,
                         kind: str) -> None:
    """A missing key and an unexpected one raise KeyErrors naming them and the model; a model
    of other sizes a ShapeError naming ``misshaped_key``; a model of another kind a TypeError."""
    with pytest.raises(KeyError, match=f"missing keys.*{missing}.*model"):
        load(make_model(), {k: v for k, v in arrays.items() if not k.endswith(missing)})
    with pytest.raises(KeyError, match="unexpected keys.*score.weight"):
        load(make_model(), {**arrays, "score.weight": np.zeros((2, 3))})
    with pytest.raises(lamina.ShapeError, match=misshaped_key):
        load(misshaped_model, arrays)
    with pytest.raises(TypeError, match=f"expected a {kind} model"):
        load(lamina.models.GPT2(n_embd=8, n_head=2, n_layer=1), arrays)
