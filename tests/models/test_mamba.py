"""Mamba in Hugging Face's layout: logits, loss and gradients against a PyTorch reference
written with Hugging Face's names (weights moved by load_hf_mamba_state_dict), the mixer's
finite differences and initialisation, parameter counts, decoding with carried states (step by
step equals the whole sequence; sampling and beam search), a quick overfit, the loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from language_model_checks import assert_cached_generation_equals_rerun, assert_overfits_a_short_text
from reference_checks import assert_gradients_match_the_table
from torch_mamba_reference import MambaForCausalLM

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import models, nn, saving
from lamina.models.mamba import hf_mamba_table
from lamina.nn import init
from lamina.text import carrying_states, reorder_caches

TINY = {"vocab_size": 11, "hidden_size": 8, "state_size": 4, "num_hidden_layers": 2, "conv_kernel": 3}


def _pair(seed: int = 0, **options):
    config = {**TINY, **options}
    torch.manual_seed(seed)
    reference = MambaForCausalLM(config).double()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.endswith("bias"):
                p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype))
    model = models.Mamba(**config)
    models.load_hf_mamba_state_dict(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("options", [{}, {"tie_word_embeddings": False, "use_bias": True, "expand": 3}])
def test_logits_loss_and_gradients_equal_the_reference(f64, options):
    model, reference = _pair(**options)
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, 7))
    logits = model(ids)
    loss = F.categorical_cross_entropy(logits[:, :-1], ids[:, 1:], from_logits=True)
    their_logits, their_loss = reference(torch.tensor(ids), labels=torch.tensor(ids))
    assert_close(logits.numpy(), their_logits.detach().numpy(), 1e-10, "logits")
    assert_close(loss.numpy(), their_loss.detach().numpy(), 1e-10, "loss")
    loss.backward()
    their_loss.backward()
    grads = {key: value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, hf_mamba_table(model), grads, every_parameter=True)


def test_mixer_gradients_by_finite_differences(f64):
    lamina.manual_seed(1)
    layer = nn.MambaBlock(4, state_size=3, conv_kernel=3, use_bias=True)
    assert check_gradients(lambda x: layer(x), randn(2, 5, 4, scale=0.5))
    for p in layer.parameters():
        p.grad = None
    out = layer(lamina.tensor(randn(1, 4, 4)))
    F.sum(out * out).backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in layer.parameters())


def test_initialisation_follows_hugging_face():
    lamina.manual_seed(0)
    layer = nn.MambaBlock(32, state_size=6, time_step_min=0.01, time_step_max=0.05)
    layer.build((None, 1, 32))
    assert layer.intermediate_size == 64 and layer.time_step_rank == 2
    dt = np.log1p(np.exp(layer.dt_proj.bias.numpy().astype(np.float64)))          # softplus(bias): the steps
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5) and dt.std() > 0
    assert np.allclose(layer.A_log.numpy(), np.log(np.arange(1, 7))[None].repeat(64, 0))
    assert np.array_equal(layer.D.numpy(), np.ones(64))
    assert np.abs(layer.dt_proj.weight.numpy()).max() <= 2 ** -0.5
    assert np.abs(layer.conv1d.weight.numpy()).max() <= 0.5 and not layer.conv1d.bias.numpy().any()
    assert layer.conv1d.weight.shape == (64, 4, 1) and layer.in_proj.weight.shape == (32, 128)
    assert abs(layer.in_proj.weight.numpy().std() - 0.1) < 0.01


def test_parameter_counts():
    expected = {"130m": 129_135_360, "370m": 371_516_416, "2.8b": 2_768_345_600}
    for name, count in expected.items():
        config = models.MAMBA_CONFIGS[name]
        assert models.mamba_parameter_count(config["vocab_size"], config["hidden_size"],
                                            config["num_hidden_layers"]) == count, name
    with init.meta():            # shape-only weights
        model = models.mamba("130m")
        model.build((None, 1))
    assert model.num_parameters() == expected["130m"]
    untied = models.Mamba(**TINY, tie_word_embeddings=False, use_bias=True)
    untied.build((None, 1))
    assert untied.num_parameters() == models.mamba_parameter_count(11, 8, 2, 4, conv_kernel=3, use_bias=True,
                                                                   tie_word_embeddings=False)
    assert "mamba" in models.list_models("language")
    assert isinstance(models.get_model("mamba", config="tiny"), models.Mamba)


def test_step_by_step_with_carried_states_equals_the_whole_sequence(f64):
    model, _ = _pair(1)
    model.eval()
    ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], size=(3, 9))
    whole = model(ids).numpy()
    with carrying_states(model):
        pieces = [model(ids[:, :1]).numpy()] + [model(ids[:, t:t + 1]).numpy() for t in range(1, 5)]
        pieces.append(model(ids[:, 5:]).numpy())                 # several steps at once continue too
    assert_close(np.concatenate(pieces, axis=1), whole, 1e-10, "carried logits")
    with carrying_states(model):             # rows reordered as beam search does
        model(ids[:, :4])
        reorder_caches(model, np.array([2, 0, 0]))
        continued = model(ids[[2, 0, 0], 4:]).numpy()
    assert_close(continued, whole[[2, 0, 0], 4:], 1e-10, "reordered rows")


def test_sampling_and_beam_search_read_one_token_per_call(f64):
    assert_cached_generation_equals_rerun(lambda vocab_size: models.Mamba(
        **{**TINY, "vocab_size": vocab_size, "initializer_range": 1.0}))


def test_a_tiny_mamba_overfits_a_short_text():
    assert_overfits_a_short_text(lambda vocab_size: models.mamba(
        "tiny", vocab_size=vocab_size, hidden_size=32, state_size=8, num_hidden_layers=2), steps=60)


def test_loading_and_its_checks(tmp_path, f64):
    model, reference = _pair(2)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    original = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in arrays.items()}
    loaded = models.Mamba(**TINY)
    models.load_hf_mamba_state_dict(loaded, original)            # mamba_ssm's key for the table
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value), key
    missing = {k: v for k, v in arrays.items() if k != "backbone.layers.1.mixer.A_log"}
    with pytest.raises(KeyError, match="missing keys.*layers.1.mixer.A_log"):
        models.load_hf_mamba_state_dict(models.Mamba(**TINY), missing)
    with pytest.raises(KeyError, match="unexpected keys.*score.weight"):
        models.load_hf_mamba_state_dict(models.Mamba(**TINY), {**arrays, "score.weight": np.zeros(2)})
    with pytest.raises(lamina.ShapeError, match="mixer.A_log"):
        models.load_hf_mamba_state_dict(models.Mamba(**{**TINY, "state_size": 5}), arrays)
    with pytest.raises(TypeError, match="expected a Mamba model"):
        models.load_hf_mamba_state_dict(models.llama("tiny"), arrays)
    with pytest.raises(ValueError, match="config must be one of"):
        models.mamba("7b")
    model.eval()
    ids = np.array([[1, 2, 3]])
    saving.save(model, tmp_path / "mamba.lamina")
    restored = saving.load(tmp_path / "mamba.lamina")
    restored.eval()
    assert isinstance(restored, models.Mamba) and restored.get_config() == model.get_config()
    assert np.array_equal(restored(ids).numpy(), model(ids).numpy())
