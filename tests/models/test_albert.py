"""ALBERT: every sharing option against a float64 torch rewrite of the published formulas
(outputs and gradients), a shared stack against an unshared one made of copies of the shared
block (equal outputs, gradients summed over the applications), centred differences, the
factorised embedding, sentence-order pairs and n-gram masks, the pre-training loss by hand,
albert-base-v2's parameter count, Hugging Face's names, and a save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina import models

TINY = {"vocab_size": 11, "embedding_size": 4, "hidden_size": 6, "num_hidden_layers": 3, "num_attention_heads": 2,
        "intermediate_size": 5, "max_position_embeddings": 8}
IDS = np.array([[1, 2, 3, 4, 9], [5, 6, 7, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
ATTENTION = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _pretraining(share="all", **options) -> models.AlbertForPreTraining:
    lamina.manual_seed(3)
    model = models.AlbertForPreTraining(**{**TINY, "share": share, **options})
    model(IDS)
    rng = np.random.default_rng(5)
    for p in model.parameters():        # move every weight, biases and LayerNorms included
        p.data = (p.data + 0.3 * rng.normal(size=p.shape)).astype(p.dtype)
    return model


# -- a torch rewrite of the formulas -------------------------------------------------------------
def _layer_norm(x, w, b, eps=1e-12):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))


def _torch_pretraining(p: dict, share: str, layers: int, heads: int, ids, segments, attention):
    """ALBERT as the module notes write it, on a dict of torch tensors named as the state dict."""
    ids, segments = torch.as_tensor(ids), torch.as_tensor(segments)
    e = "albert.embeddings."
    x = p[e + "word_embeddings.weight"][ids] + p[e + "position_embeddings.weight"][torch.arange(ids.shape[1])]
    x = _layer_norm(x + p[e + "token_type_embeddings.weight"][segments], p[e + "layer_norm.weight"],
                    p[e + "layer_norm.bias"])
    projection = "albert.encoder.embedding_hidden_mapping_in."
    h = x @ p[projection + "weight"] + p[projection + "bias"]
    n, t, width = h.shape
    d = width // heads
    blocked = torch.as_tensor(attention == 0)[:, None, None, :]
    for i in range(layers):
        a = f"albert.encoder.albert_layer_groups.{0 if share in ('all', 'attention') else i}.albert_layers.0."
        f = f"albert.encoder.albert_layer_groups.{0 if share in ('all', 'ffn') else i}.albert_layers.0."
        q, k, v = (h @ p[a + "attention.in_weight"] + p[a + "attention.in_bias"]).split(width, -1)
        q, k, v = (z.reshape(n, t, heads, d).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2) / d ** 0.5).masked_fill(blocked, float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, width)
        h = _layer_norm(h + out @ p[a + "attention.out_weight"] + p[a + "attention.out_bias"],
                        p[a + "attention_norm.weight"], p[a + "attention_norm.bias"])
        inner = _gelu_tanh(h @ p[f + "ffn.weight"] + p[f + "ffn.bias"])
        h = _layer_norm(h + inner @ p[f + "ffn_output.weight"] + p[f + "ffn_output.bias"],
                        p[f + "full_layer_layer_norm.weight"], p[f + "full_layer_layer_norm.bias"])
    m = _gelu_tanh(h @ p["predictions_dense.weight"] + p["predictions_dense.bias"])
    m = _layer_norm(m, p["predictions_norm.weight"], p["predictions_norm.bias"])
    mlm = m @ p[e + "word_embeddings.weight"].T + p["predictions_bias"]
    pooled = torch.tanh(h[:, 0] @ p["albert.pooler.weight"] + p["albert.pooler.bias"])
    return mlm, pooled @ p["sop_classifier.weight"] + p["sop_classifier.bias"]


def _weighted_sum(mlm, sop, rng):
    """A scalar with random weights on every output, so each output's gradient is tested."""
    return (mlm * rng[0]).sum() + (sop * rng[1]).sum()


def _lamina_gradients(model, loss) -> dict:
    for p in model.parameters():
        p.grad = None
    loss.backward()
    return {name: np.array(p.grad) for name, p in model.named_parameters()}


@pytest.mark.parametrize("share", models.ALBERT_SHARING)
def test_outputs_and_gradients_equal_a_torch_rewrite(f64, share):
    model = _pretraining(share)
    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(2, 5, TINY["vocab_size"])), rng.normal(size=(2, 2)))
    mlm, sop = model(IDS, SEGMENTS, ATTENTION)
    grads = _lamina_gradients(model, _weighted_sum(mlm, sop, weights))
    params = {name: torch.tensor(np.array(p.data), requires_grad=True) for name, p in model.named_parameters()}
    t_mlm, t_sop = _torch_pretraining(params, share, 3, 2, IDS, SEGMENTS, ATTENTION)
    _weighted_sum(t_mlm, t_sop, [torch.as_tensor(w) for w in weights]).backward()
    real = ATTENTION != 0
    np.testing.assert_allclose(mlm.numpy()[real], t_mlm.detach().numpy()[real], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sop.numpy(), t_sop.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert sorted(grads) == sorted(params)
    for name, tensor in params.items():
        np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=name)


def test_shared_stack_equals_copies_of_its_block_and_sums_their_gradients(f64):
    shared = _pretraining("all")
    unshared = _pretraining("none")
    state = shared.state_dict()
    block = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    copies = {key: value for key, value in state.items() if not key.startswith(block)}
    for i in range(3):
        copies.update({key.replace(".0.albert_layers", f".{i}.albert_layers"): value
                       for key, value in state.items() if key.startswith(block)})
    unshared.load_state_dict(copies)
    rng = np.random.default_rng(1)
    weights = (rng.normal(size=(2, 5, TINY["vocab_size"])), rng.normal(size=(2, 2)))
    out_shared, out_unshared = shared(IDS, SEGMENTS, ATTENTION), unshared(IDS, SEGMENTS, ATTENTION)
    for a, b in zip(out_shared, out_unshared):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-13)
    g_shared = _lamina_gradients(shared, _weighted_sum(*out_shared, weights))
    g_unshared = _lamina_gradients(unshared, _weighted_sum(*out_unshared, weights))
    for key in (k for k in g_shared if k.startswith(block)):
        per_copy = [g_unshared[key.replace(".0.albert_layers", f".{i}.albert_layers")] for i in range(3)]
        assert all(np.abs(g).max() > 0 for g in per_copy), key
        np.testing.assert_allclose(g_shared[key], sum(per_copy), rtol=1e-10, atol=1e-13, err_msg=key)
    for key in (k for k in g_shared if not k.startswith(block)):
        np.testing.assert_allclose(g_shared[key], g_unshared[key], rtol=1e-10, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("share", ["all", "ffn"])
def test_gradients_by_centred_differences(f64, share):
    model = _pretraining(share)
    rng = np.random.default_rng(2)
    weights = (rng.normal(size=(2, 5, TINY["vocab_size"])), rng.normal(size=(2, 2)))

    def objective() -> float:
        with lamina.no_grad():
            return float(_weighted_sum(*model(IDS, SEGMENTS, ATTENTION), weights).numpy())

    grads = _lamina_gradients(model, _weighted_sum(*model(IDS, SEGMENTS, ATTENTION), weights))
    params = dict(model.named_parameters())
    block = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    for name, index in (("albert.embeddings.word_embeddings.weight", (3, 1)),
                        ("albert.encoder.embedding_hidden_mapping_in.weight", (2, 4)),
                        (block + "attention.in_weight", (1, 7)), (block + "ffn.weight", (5, 2)),
                        (block + "full_layer_layer_norm.weight", (3,)), ("predictions_bias", (4,)),
                        ("sop_classifier.weight", (2, 1))):
        data, h = params[name].data, 1e-6
        saved = data[index]
        data[index] = saved + h
        up = objective()
        data[index] = saved - h
        down = objective()
        data[index] = saved
        np.testing.assert_allclose(grads[name][index], (up - down) / (2 * h), rtol=1e-6, atol=1e-9, err_msg=name)


def test_factorised_embedding_equals_a_torch_rewrite(f64):
    model = models.AlbertModel(**TINY)
    hidden = model(IDS, SEGMENTS)
    p = {name: torch.tensor(np.array(v.data)) for name, v in model.named_parameters()}
    x = p["embeddings.word_embeddings.weight"][torch.as_tensor(IDS)] + p["embeddings.position_embeddings.weight"][:5]
    x = x + p["embeddings.token_type_embeddings.weight"][torch.as_tensor(SEGMENTS)]
    x = torch.nn.functional.layer_norm(x, (4,), p["embeddings.layer_norm.weight"], p["embeddings.layer_norm.bias"],
                                       eps=1e-12)
    projected = x @ p["encoder.embedding_hidden_mapping_in.weight"] + p["encoder.embedding_hidden_mapping_in.bias"]
    ours = model.encoder.embedding_hidden_mapping_in(model.embeddings(IDS, SEGMENTS))
    np.testing.assert_allclose(ours.numpy(), projected.numpy(), rtol=1e-12, atol=1e-14)
    assert model.embeddings.word_embeddings.weight.shape == (11, 4) and hidden.shape == (2, 5, 6)


def test_sop_pairs_swap_half_the_pairs_and_label_the_swaps():
    firsts, seconds, labels = models.sop_pairs([f"a{i}" for i in range(1000)], [f"b{i}" for i in range(1000)], 0)
    assert labels.dtype == np.int64 and set(np.unique(labels)) == {0, 1} and 0.45 < labels.mean() < 0.55
    for first, second, label in zip(firsts, seconds, labels):
        assert (first[0], second[0]) == (("b", "a") if label else ("a", "b")) and first[1:] == second[1:]
    again = models.sop_pairs([f"a{i}" for i in range(1000)], [f"b{i}" for i in range(1000)], 0)[2]
    np.testing.assert_array_equal(again, labels)
    with pytest.raises(ValueError, match="1 first segments and 2 second"):
        models.sop_pairs(["a"], ["b", "c"])


def test_ngram_mask_masks_short_spans_of_real_tokens():
    ids = np.arange(40 * 30).reshape(40, 30) % 50 + 2
    ids[:, 0] = 1                                          # a special token
    attention = np.ones_like(ids)
    attention[:, 25:] = 0
    mask = models.ngram_mask(ids, 0.2, max_n=3, generator=0, attention_mask=attention, special=[1])
    assert not mask[:, 0].any() and not mask[:, 25:].any() and mask.any(axis=1).all()
    np.testing.assert_array_equal(mask.sum(axis=1), np.full(40, 5))         # round(0.2 * 24)
    runs = [len(run) for row in mask for run in "".join("x" if m else " " for m in row).split()]
    assert max(runs) <= 6 and np.mean(runs) > 1.2                           # spans, some of them adjacent
    single = models.ngram_mask(ids, 0.2, max_n=1, generator=0, attention_mask=attention, special=[1])
    assert single.sum() == mask.sum()
    with pytest.raises(ValueError, match="probability"):
        models.ngram_mask(ids, 0.0)


def test_pretraining_loss_equals_a_hand_computation(f64):
    model = _pretraining()
    mask = np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=bool)
    out = models.albert_pretraining_loss(model, IDS, mask, 10, [1, 0], SEGMENTS, ATTENTION)
    mlm, sop = (np.asarray(t.numpy()) for t in model(np.where(mask, 10, IDS), SEGMENTS, ATTENTION))

    def nll(logits, target):
        return np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, target[..., None], -1)[..., 0]

    expected_mlm = nll(mlm[mask], IDS[mask]).mean()
    expected_sop = nll(sop, np.array([1, 0])).mean()
    np.testing.assert_allclose([float(out.mlm_loss.numpy()), float(out.sop_loss.numpy()), float(out.loss.numpy())],
                               [expected_mlm, expected_sop, expected_mlm + expected_sop], rtol=1e-12)
    with pytest.raises(ValueError, match="sentence-order labels"):
        models.albert_pretraining_loss(model, IDS, mask, 10, [1])


def test_albert_base_v2_parameter_count():
    """Hugging Face's AlbertModel for albert-base-v2 (pooler included, no heads): 11,683,584,
    the paper's "12M" and the model card's 11.7M; BERT-base has 109,482,240."""
    assert models.albert_parameter_count() == 11_683_584
    model = models.AlbertModel()
    model.build((1, 4))
    counted = sum(p.size for p in model.parameters())
    assert counted == 11_683_584 and round(counted / 1e6, 1) == 11.7
    assert models.albert_parameter_count(share="none") == counted + 11 * 7_087_872      # the block, 11 more times


HF_BLOCK = ["attention.query", "attention.key", "attention.value", "attention.dense", "attention.LayerNorm", "ffn",
            "ffn_output", "full_layer_layer_norm"]


def _hf_state_dict(rng) -> dict:
    """Random weights under Hugging Face's AlbertForPreTraining names and shapes (out, in), tiny sizes."""
    v, e, h, f, p = 11, 4, 6, 5, 8
    shapes = {"albert.embeddings.word_embeddings.weight": (v, e),
              "albert.embeddings.position_embeddings.weight": (p, e),
              "albert.embeddings.token_type_embeddings.weight": (2, e), "albert.embeddings.LayerNorm.weight": (e,),
              "albert.embeddings.LayerNorm.bias": (e,), "albert.encoder.embedding_hidden_mapping_in.weight": (h, e),
              "albert.encoder.embedding_hidden_mapping_in.bias": (h,), "albert.pooler.weight": (h, h),
              "albert.pooler.bias": (h,), "predictions.LayerNorm.weight": (e,), "predictions.LayerNorm.bias": (e,),
              "predictions.dense.weight": (e, h), "predictions.dense.bias": (e,), "predictions.bias": (v,),
              "predictions.decoder.weight": (v, e), "predictions.decoder.bias": (v,),
              "sop_classifier.classifier.weight": (2, h), "sop_classifier.classifier.bias": (2,)}
    out_in = {"ffn": (f, h), "ffn_output": (h, f)}
    for part in HF_BLOCK:
        key = "albert.encoder.albert_layer_groups.0.albert_layers.0." + part
        norm = part in ("attention.LayerNorm", "full_layer_layer_norm")
        shapes[key + ".weight"] = (h,) if norm else out_in.get(part, (h, h))
        shapes[key + ".bias"] = (h,) if norm else out_in.get(part, (h, h))[:1]
    state = {key: rng.normal(size=shape) for key, shape in shapes.items()}
    state["albert.embeddings.position_ids"] = np.arange(p)[None]
    return state


def test_hugging_face_names_load_into_the_matching_weights():
    state = _hf_state_dict(np.random.default_rng(0))
    model = models.AlbertForPreTraining(**TINY)
    models.load_hf_albert_state_dict(model, state)
    ours = {k: np.asarray(v) for k, v in model.state_dict().items()}
    hf_block = block = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    joined = np.concatenate([state[hf_block + f"attention.{p}.weight"].T for p in ("query", "key", "value")], 1)
    np.testing.assert_allclose(ours[block + "attention.in_weight"], joined, rtol=1e-6)
    np.testing.assert_allclose(ours[block + "ffn_output.weight"], state[hf_block + "ffn_output.weight"].T, rtol=1e-6)
    np.testing.assert_allclose(ours["albert.encoder.embedding_hidden_mapping_in.weight"],
                               state["albert.encoder.embedding_hidden_mapping_in.weight"].T, rtol=1e-6)
    np.testing.assert_allclose(ours["sop_classifier.weight"], state["sop_classifier.classifier.weight"].T, rtol=1e-6)
    np.testing.assert_allclose(ours["predictions_bias"], state["predictions.bias"], rtol=1e-6)
    assert len(ours) == 28                                 # strict: each of them came from a checkpoint key
    encoder = models.AlbertModel(**TINY)                   # the heads of a pre-training checkpoint are ignored
    models.load_hf_albert_state_dict(encoder, state)
    np.testing.assert_allclose(np.asarray(encoder.pooler.weight.data), state["albert.pooler.weight"].T, rtol=1e-6)
    del state[hf_block + "ffn.bias"]
    with pytest.raises(KeyError, match="ffn.bias"):
        models.load_hf_albert_state_dict(models.AlbertForMaskedLM(**TINY), state)
    with pytest.raises(ValueError, match="share='attention'"):
        models.load_hf_albert_state_dict(models.AlbertModel(**TINY, share="attention"), state)


def test_partly_shared_model_saves_and_loads(tmp_path):
    model = _pretraining("attention")
    lamina.save(model, tmp_path / "albert.safetensors")
    twin = lamina.load(tmp_path / "albert.safetensors")
    assert twin.get_config() == model.get_config() and len(twin.albert.encoder.albert_layer_groups) == 3
    assert not twin.albert.encoder.block(1).has_attention and twin.albert.encoder.block(1).has_feed_forward
    with lamina.no_grad():
        for a, b in zip(model(IDS, SEGMENTS), twin(IDS, SEGMENTS)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="share must be one of"):
        models.AlbertModel(**TINY, share="heads")
    with pytest.raises(ValueError, match="not divisible"):
        models.AlbertModel(**{**TINY, "num_attention_heads": 4})
    block = models.AlbertModel(**TINY, share="ffn").encoder.block(1)
    with pytest.raises(ValueError, match="without its feed-forward network"):
        block.feed_forward(np.zeros((1, 2, 6)))


def test_readme_example_runs():
    printed, names = run_readme_section("ALBERT")
    assert printed.split()[:3] == ["(4,", "2)", "1"] and float(printed.split()[-1]) > 0
