"""BERT in Hugging Face's layout: hidden states, pooled output and masked-LM scores with their
gradients against a PyTorch reference written with Hugging Face's names (weights moved by
load_hf_bert_state_dict), the padding mask, parameter counts and the loader's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_bert_reference import BertForMaskedLM, BertModel

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import models, saving
from lamina.models.bert import BertLayer, hf_bert_table
from lamina.nn import init

SIZES = {"vocab": 17, "hidden": 8, "layers": 2, "heads": 2, "inner": 12, "positions": 10, "types": 2}
CONFIG = {"vocab_size": 17, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
          "intermediate_size": 12, "max_position_embeddings": 10, "hidden_dropout_prob": 0.0,
          "attention_probs_dropout_prob": 0.0}
IDS = np.array([[2, 5, 7, 9, 3, 0], [2, 11, 3, 4, 0, 0]])
TYPES = np.array([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _torch_inputs():
    return torch.tensor(IDS), torch.tensor(TYPES), torch.tensor(MASK)


def _compare_gradients(model, reference, table, prefix: str = "") -> None:
    grads = {key.removeprefix(prefix): value.grad.numpy() for key, value in reference.named_parameters()
             if value.grad is not None}
    params = dict(model.named_parameters())
    for ours, weight in table.items():
        expected = weight.convert(*(grads[key] for key in weight.keys))
        assert_close(params[ours].grad, expected, 1e-9, ours)


def test_hidden_states_pooled_output_and_gradients_equal_the_reference(f64):
    torch.manual_seed(0)
    reference = BertModel(**SIZES).double()
    model = models.BERT(**CONFIG)
    models.load_hf_bert_state_dict(model, reference.state_dict())
    hidden = model(IDS, TYPES, MASK)
    pooled = model.pool(hidden)
    their_hidden, their_pooled = reference(*_torch_inputs())
    real = MASK.astype(bool)
    assert_close(hidden.numpy()[real], their_hidden.detach().numpy()[real], 1e-10, "hidden states")
    assert_close(pooled.numpy(), their_pooled.detach().numpy(), 1e-10, "pooled output")
    up_h, up_p = randn(*hidden.shape, seed=1) * MASK[..., None], randn(*pooled.shape, seed=2)
    F.add(F.sum(F.mul(hidden, lamina.tensor(up_h))), F.sum(F.mul(pooled, lamina.tensor(up_p)))).backward()
    ((their_hidden * torch.tensor(up_h)).sum() + (their_pooled * torch.tensor(up_p)).sum()).backward()
    _compare_gradients(model, reference, hf_bert_table(model))


def test_masked_lm_scores_and_gradients_equal_the_reference(f64):
    torch.manual_seed(1)
    reference = BertForMaskedLM(**SIZES).double()
    model = models.BertForMaskedLM(**CONFIG)
    models.load_hf_bert_state_dict(model, reference.state_dict())
    scores = model(IDS, TYPES, MASK)
    theirs = reference(*_torch_inputs())
    real = MASK.astype(bool)
    assert_close(scores.numpy()[real], theirs.detach().numpy()[real], 1e-10, "masked-LM scores")
    upstream = randn(*scores.shape, seed=3) * MASK[..., None]
    F.sum(F.mul(scores, lamina.tensor(upstream))).backward()
    (theirs * torch.tensor(upstream)).sum().backward()
    grads = {key: value.grad.numpy() for key, value in reference.named_parameters()}
    params = dict(model.named_parameters())
    assert_close(params["decoder_bias"].grad, grads["cls.predictions.bias"], 1e-9, "decoder bias")
    assert_close(params["transform.weight"].grad, grads["cls.predictions.transform.dense.weight"].T, 1e-9,
                 "transform")
    table = {k.removeprefix("bert."): w for k, w in hf_bert_table(model.bert, "bert.").items()}
    params = {k.removeprefix("bert."): p for k, p in params.items()}
    for ours, weight in table.items():
        expected = weight.convert(*(grads["bert." + key] for key in weight.keys))
        assert_close(params[ours].grad, expected, 1e-9, ours)


def test_padding_is_irrelevant_under_the_attention_mask():
    lamina.manual_seed(0)
    model = models.BERT(**CONFIG)
    ids = IDS[:1].copy()
    first = model(ids, attention_mask=MASK[:1]).numpy()
    ids[0, -1] = 13                              # change the padded token
    second = model(ids, attention_mask=MASK[:1]).numpy()
    assert np.allclose(first[0, :5], second[0, :5], atol=1e-6)
    unmasked = model(ids).numpy()                # without the mask the padding counts
    assert not np.allclose(unmasked[0, :5], second[0, :5], atol=1e-4)


def test_layer_gradients_by_finite_differences(f64):
    layer = BertLayer(4, 2, 6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert check_gradients(lambda x: layer(x, key_mask=np.array([[1, 1, 0], [1, 1, 1]], dtype=bool)),
                           randn(2, 3, 4))


def test_parameter_counts_of_the_full_sizes():
    expected = {("base", False): 109_482_240, ("base", True): 109_514_298,
                ("large", False): 335_141_888, ("large", True): 335_174_458}
    for (size, masked_lm), count in expected.items():
        with init.meta():        # shape-only weights: the full model costs no memory
            model = models.bert(size, masked_lm=masked_lm)
            model.build((None, 1))
        assert model.num_parameters() == count, (size, masked_lm)
        config = {k: v for k, v in model.get_config().items()
                  if k in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")}
        assert models.bert_parameter_count(**config, masked_lm=masked_lm) == count


def test_loader_accepts_a_pretraining_checkpoint_and_checks_keys(f64):
    torch.manual_seed(2)
    reference = BertForMaskedLM(**SIZES).double()
    state = {("bert." if not k.startswith("cls.") else "") + k.removeprefix("bert."): v
             for k, v in reference.state_dict().items()}
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in state.items()}
    state["cls.seq_relationship.weight"] = torch.zeros(2, 8)
    model = models.bert("base", masked_lm=True, **{**CONFIG, "hidden_size": 8})
    models.load_hf_bert_state_dict(model, state)   # old LayerNorm names and an unused head are fine
    encoder = models.BERT(**CONFIG, add_pooling_layer=False)
    models.load_hf_bert_state_dict(encoder, state)
    assert np.array_equal(encoder.embeddings.word_embeddings.weight.numpy(),
                          reference.bert.embeddings.word_embeddings.weight.detach().numpy())
    with pytest.raises(KeyError, match="missing keys.*pooler.dense.weight"):
        models.load_hf_bert_state_dict(models.BERT(**CONFIG), state)
    del state["bert.encoder.layer.1.attention.self.key.bias"]
    with pytest.raises(KeyError, match="missing keys.*layer.1.attention.self.key.bias"):
        models.load_hf_bert_state_dict(models.BertForMaskedLM(**CONFIG), state)
    with pytest.raises(lamina.ShapeError, match="max_position_embeddings=10"):
        encoder(np.zeros((1, 11), dtype=np.int64))
    with pytest.raises(lamina.ShapeError, match="attention_mask of shape"):
        encoder(IDS, attention_mask=MASK[:, :3])
    with pytest.raises(ValueError, match="size must be one of"):
        models.bert("tiny")


def test_a_saved_masked_lm_loads_with_its_weights(tmp_path):
    model = models.BertForMaskedLM(**CONFIG)
    model.eval()
    expected = model(IDS, TYPES, MASK).numpy()
    saving.save(model, tmp_path / "bert.lamina")
    loaded = saving.load(tmp_path / "bert.lamina")
    loaded.eval()
    assert isinstance(loaded, models.BertForMaskedLM) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(IDS, TYPES, MASK).numpy(), expected)
