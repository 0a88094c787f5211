"""multi_head_attention_forward: PyTorch's functional multi-head attention, values and gradients
against torch for every option, a gradient check, and errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.nn.functional as F
from helpers import check_gradients, compare_with_torch

L, S, N, E, H = 4, 5, 2, 6, 2


def _arrays(seed=0, kdim=E, vdim=E):
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape)

    masks = rng.random((L, S)) < 0.25, rng.random((N, S)) < 0.25
    for m in masks:
        m[..., 0] = False                                  # every query sees at least one key
    return dict(q=r(L, N, E), k=r(S, N, kdim), v=r(S, N, vdim), w=r(3 * E, E), b=r(3 * E), wo=r(E, E), bo=r(E),
                bk=r(1, 1, E), bv=r(1, 1, E), wq=r(E, E), wk=r(E, kdim), wv=r(E, vdim), attn=masks[0],
                padding=masks[1], float_mask=r(N * H, L, S))


OPTIONS = [
    {},
    {"bias_kv": True},
    {"zero_attn": True},
    {"attn_mask": "bool"},
    {"attn_mask": "float3d"},
    {"padding": True},
    {"attn_mask": "bool", "padding": True, "bias_kv": True, "zero_attn": True},
    {"average": False},
    {"need_weights": False, "padding": True},
    {"no_bias": True},
]


def _call(module, arrays, opts, *tensors):
    """Run ``module``'s multi_head_attention_forward on ``tensors`` (q, k, v, W, Wo and the
    optional ones) with the options ``opts``; masks are built in ``module``'s array type."""
    q, k, v, w, b, wo, bo, bk, bv = tensors
    wrap = torch.tensor if module is TF else (lambda a: a)
    float_mask = arrays["float_mask"].astype(np.float32 if str(q.dtype).endswith("float32") else np.float64)
    attn = {"bool": wrap(arrays["attn"]), "float3d": wrap(float_mask)}.get(opts.get("attn_mask"))
    out = module.multi_head_attention_forward(
        q, k, v, E, H, w, None if opts.get("no_bias") else b, bk if opts.get("bias_kv") else None,
        bv if opts.get("bias_kv") else None, opts.get("zero_attn", False), 0.0, wo, bo, training=False,
        key_padding_mask=wrap(arrays["padding"]) if opts.get("padding") else None,
        need_weights=opts.get("need_weights", True), attn_mask=attn, average_attn_weights=opts.get("average", True))
    return out if out[1] is not None else out[0]


@pytest.mark.parametrize("opts", OPTIONS, ids=[",".join(o) or "plain" for o in OPTIONS])
def test_values_weights_and_gradients_equal_torchs(opts):
    a = _arrays()
    names = ["q", "k", "v", "w", "b", "wo", "bo", "bk", "bv"]
    compare_with_torch(lambda *t: _call(F, a, opts, *t), lambda *t: _call(TF, a, opts, *t),
                       *[a[n] for n in names], dtype=np.float64, rtol=1e-10)


def test_separate_projections_of_other_key_and_value_sizes_static_keys_and_unbatched_inputs():
    a = _arrays(seed=1, kdim=3, vdim=4)

    def separate(module, q, k, v, wq, wk, wv, wo, bo):
        return module.multi_head_attention_forward(q, k, v, E, H, None, None, None, None, False, 0.0, wo, bo,
                                                   training=False, use_separate_proj_weight=True, q_proj_weight=wq,
                                                   k_proj_weight=wk, v_proj_weight=wv)

    compare_with_torch(lambda *t: separate(F, *t), lambda *t: separate(TF, *t),
                       *[a[n] for n in ("q", "k", "v", "wq", "wk", "wv", "wo", "bo")], dtype=np.float64, rtol=1e-10)
    compare_with_torch(lambda *t: separate(F, *t), lambda *t: separate(TF, *t),
                       *[a[n][:, 0] if n in "qkv" else a[n] for n in ("q", "k", "v", "wq", "wk", "wv", "wo", "bo")],
                       dtype=np.float64, rtol=1e-10)
    static = np.random.default_rng(2).standard_normal((2, N * H, 7, E // H))

    def with_static(module, q, k, v, w, wo, sk, sv):
        return module.multi_head_attention_forward(q, k, v, E, H, w, None, None, None, False, 0.0, wo, None,
                                                   training=False, static_k=sk, static_v=sv)

    a = _arrays(seed=3)
    compare_with_torch(lambda *t: with_static(F, *t), lambda *t: with_static(TF, *t),
                       a["q"], a["k"], a["v"], a["w"], a["wo"], static[0], static[1], dtype=np.float64, rtol=1e-10)


def test_a_causal_mask_with_the_hint_and_dropout_in_training_only():
    a = _arrays(seed=4)
    causal = np.triu(np.ones((L, S), bool), 1)
    tensors = [lamina.tensor(a[n], dtype=np.float64) for n in ("q", "k", "v", "w", "b", "wo", "bo")]
    args = (E, H, *tensors[3:5], None, None, False)
    hinted = F.multi_head_attention_forward(*tensors[:3], *args, 0.0, *tensors[5:], training=False,
                                            attn_mask=causal, is_causal=True, need_weights=False)[0]
    theirs = TF.multi_head_attention_forward(*[torch.tensor(a[n]) for n in ("q", "k", "v")], E, H,
                                             torch.tensor(a["w"]), torch.tensor(a["b"]), None, None, False, 0.0,
                                             torch.tensor(a["wo"]), torch.tensor(a["bo"]), training=False,
                                             attn_mask=torch.tensor(causal), is_causal=True, need_weights=False)[0]
    np.testing.assert_allclose(hinted.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    evaluation = F.multi_head_attention_forward(*tensors[:3], *args, 0.9, *tensors[5:], training=False)
    np.testing.assert_allclose(evaluation[0].numpy(), F.multi_head_attention_forward(
        *tensors[:3], *args, 0.0, *tensors[5:], training=True)[0].numpy(), rtol=1e-12)
    dropped = F.multi_head_attention_forward(*tensors[:3], *args, 0.9, *tensors[5:], training=True,
                                             average_attn_weights=False)
    zero_share = float((dropped[1].numpy() == 0).mean())
    assert 0.75 < zero_share < 0.99                     # about 90% of the weights dropped


def test_gradcheck_through_masks_and_the_extra_keys():
    a = _arrays(seed=5)
    opts = {"attn_mask": "bool", "padding": True, "bias_kv": True, "zero_attn": True}
    assert check_gradients(lambda *t: _call(F, a, opts, *t)[0],
                           *[a[n] for n in ("q", "k", "v", "w", "b", "wo", "bo", "bk", "bv")])


def test_bad_arguments_name_the_function_and_what_was_expected():
    a = _arrays(seed=6)
    t = {n: lamina.tensor(a[n], dtype=np.float64) for n in ("q", "k", "v", "w", "b", "wo", "bo")}

    def call(q=t["q"], k=t["k"], v=t["v"], check=E, heads=H, **kwargs):
        return F.multi_head_attention_forward(q, k, v, check, heads, t["w"], t["b"], None, None, False, 0.0, t["wo"],
                                              t["bo"], **kwargs)

    with pytest.raises(lamina.ShapeError, match=r"multi_head_attention_forward: query has 6 features, expected "
                                                r"embed_dim_to_check=8"):
        call(check=8)
    with pytest.raises(ValueError, match="embed_dim 6 is not divisible by num_heads 4"):
        call(heads=4)
    with pytest.raises(lamina.ShapeError, match=r"must all be \(L, N, E\) or all unbatched"):
        call(q=t["q"][:, 0])
    with pytest.raises(lamina.ShapeError, match=r"key_padding_mask must be \(N, S\) = \(2, 5\), got \(2, 4\)"):
        call(key_padding_mask=a["padding"][:, :4])
    with pytest.raises(RuntimeError, match="is_causal is a hint that attn_mask is the causal mask"):
        call(is_causal=True)
    with pytest.raises(ValueError, match="bias_k and bias_v come together"):
        F.multi_head_attention_forward(t["q"], t["k"], t["v"], E, H, t["w"], t["b"], a["bk"], None, False, 0.0,
                                       t["wo"], t["bo"])
    with pytest.raises(ValueError, match="use_separate_proj_weight needs q_proj_weight"):
        call(use_separate_proj_weight=True)


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask")   # torch's, on a bool
def test_float32_with_every_mask_and_extra_key_equals_torch():                             # padding beside floats
    a = _arrays(seed=7)
    opts = {"attn_mask": "float3d", "padding": True, "bias_kv": True, "zero_attn": True}
    out = compare_with_torch(lambda *t: _call(F, a, opts, *t), lambda *t: _call(TF, a, opts, *t),
                             *[a[n] for n in ("q", "k", "v", "w", "b", "wo", "bo", "bk", "bv")], dtype=np.float32)
    assert out[0].dtype == np.float32 and out[1].dtype == np.float32


def test_a_query_whose_every_key_is_masked_gets_zeros_without_weights_as_torch():
    a = _arrays(seed=8)
    a["padding"][1] = True                                # the second sequence hides every key

    def call(module, *t):
        opts = {"padding": True, "need_weights": False, "attn_mask": "bool"}
        return _call(module, a, opts, *t)

    out = compare_with_torch(lambda *t: call(F, *t), lambda *t: call(TF, *t),
                             *[a[n] for n in ("q", "k", "v", "w", "b", "wo", "bo", "bk", "bv")], dtype=np.float64,
                             rtol=1e-10)
    assert np.isfinite(out[0].numpy()).all()


def test_mis_shaped_masks_projections_and_static_keys_are_named():
    a = _arrays(seed=9)
    t = {n: lamina.tensor(a[n], dtype=np.float64) for n in ("q", "k", "v", "w", "b", "wo", "bo")}

    def call(w=t["w"], b=t["b"], **kwargs):
        return F.multi_head_attention_forward(t["q"], t["k"], t["v"], E, H, w, b, None, None, False, 0.0, t["wo"],
                                              t["bo"], **kwargs)

    with pytest.raises(lamina.ShapeError, match=r"attn_mask must be \(L, S\) = \(4, 5\) or \(N num_heads, L, S\) = "
                                                r"\(4, 4, 5\), got \(4, 4\)"):
        call(attn_mask=a["attn"][:, :4])
    with pytest.raises(lamina.ShapeError, match=r"in_proj_bias must be \(3 E,\) = \(18,\), got \(10,\)"):
        call(b=np.zeros(10))
    with pytest.raises(lamina.ShapeError, match=r"in_proj_weight must be \(3 E, E\) = \(18, 6\), got \(12, 6\)"):
        call(w=np.zeros((12, 6)))
    with pytest.raises(lamina.ShapeError, match=r"static_k must be \(N num_heads, S, head_dim\) = \(4, S, 3\), got "
                                                r"\(2, 5, 3\)"):
        call(static_k=np.zeros((2, 5, 3)))
