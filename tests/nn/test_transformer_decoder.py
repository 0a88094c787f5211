"""The decoder layer, the encoder and decoder stacks and the whole Transformer against
PyTorch's (weights loaded through from_torch_state_dict), their masks, dropout, errors and
saving, and a small Transformer that learns to reverse sequences."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from nn_checks import loaded_from_torch as _loaded

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import nn, optim, parallel
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.transformer import TransformerEncoderLayer
from lamina.nn.transformer_decoder import TransformerDecoderLayer, from_torch_state_dict
from lamina.nn.transformer_model import Transformer, TransformerDecoder, TransformerEncoder

RTOL = 1e-9
N, T_TGT, T_SRC, D, HEADS = 3, 4, 5, 8, 2


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _randomize(module: torch.nn.Module, rng) -> None:
    """Moves every torch parameter off its initial value (zero biases, unit norm scales)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.from_numpy(0.4 * rng.standard_normal(tuple(p.shape))))


def _check_parameter_grads(ours, ref) -> None:
    theirs = from_torch_state_dict({name: p.grad for name, p in ref.named_parameters()})
    mine = dict(ours.named_parameters())
    assert sorted(theirs) == sorted(mine)
    for name, param in mine.items():
        assert_close(param.grad, theirs[name], RTOL, f"gradient of {name}")


def _inputs(rng, *shapes):
    arrays = [rng.standard_normal(s) for s in shapes]
    return ([lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays],
            [torch.tensor(a, requires_grad=True) for a in arrays])


def _decoder_masks(kind: str, rng) -> dict:
    """PyTorch-convention masks (True = not allowed) for the decoder layer call."""
    causal = np.triu(np.ones((T_TGT, T_TGT), dtype=bool), k=1)
    tgt_padding = np.zeros((N, T_TGT), dtype=bool)
    tgt_padding[0, 3:] = True                           # later steps only: no query loses every key
    memory_padding = np.zeros((N, T_SRC), dtype=bool)
    memory_padding[1, 4:] = True
    memory_padding[2, 1] = True
    if kind == "bool":
        return {"tgt_mask": causal, "tgt_key_padding_mask": tgt_padding,
                "memory_key_padding_mask": memory_padding, "tgt_is_causal": True}
    if kind == "float":
        return {"tgt_mask": Transformer.generate_square_subsequent_mask(T_TGT, np.float64),
                "memory_mask": rng.standard_normal((N * HEADS, T_TGT, T_SRC)),
                "tgt_key_padding_mask": rng.standard_normal((N, T_TGT)),
                "memory_key_padding_mask": np.where(memory_padding, -np.inf, 0.0)}
    # a boolean attention mask with a float key padding mask (PyTorch warns, and adds them)
    memory_mask = rng.random((T_TGT, T_SRC)) < 0.4
    memory_mask[:, 0] = False
    return {"tgt_mask": causal, "tgt_key_padding_mask": rng.standard_normal((N, T_TGT)),
            "memory_mask": memory_mask, "memory_key_padding_mask": rng.standard_normal((N, T_SRC))}


def _as_torch(masks: dict) -> dict:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in masks.items()}


@pytest.mark.parametrize("masking", ["bool", "float", "mixed"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(f64, norm_first, activation, masking):
    rng = np.random.default_rng(1)
    ref = torch.nn.TransformerDecoderLayer(D, HEADS, 12, dropout=0.0, activation=activation, batch_first=True,
                                           norm_first=norm_first, dtype=torch.float64)
    _randomize(ref, rng)
    layer = _loaded(TransformerDecoderLayer(D, HEADS, 12, dropout=0.0, activation=activation, norm_first=norm_first),
                    ref, [(N, T_TGT, D), (N, T_SRC, D)])
    (tgt, memory), (tgt_t, memory_t) = _inputs(rng, (N, T_TGT, D), (N, T_SRC, D))
    masks = _decoder_masks(masking, rng)

    out = layer(tgt, memory, **masks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Support for mismatched key_padding_mask")
        expected = ref.eval()(tgt_t, memory_t, **_as_torch(masks))
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "output")

    up = rng.standard_normal(out.shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(tgt.grad, tgt_t.grad.numpy(), RTOL, "gradient of tgt")
    assert_close(memory.grad, memory_t.grad.numpy(), RTOL, "gradient of memory")
    _check_parameter_grads(layer, ref)


@pytest.mark.parametrize("activation, norm_first", [("relu", False), ("gelu", True)])
def test_transformer_matches_torch(f64, activation, norm_first):
    rng = np.random.default_rng(2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "enable_nested_tensor is True")
        ref = torch.nn.Transformer(D, HEADS, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=12,
                                   dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True,
                                   dtype=torch.float64)
    _randomize(ref, rng)
    model = _loaded(Transformer(D, HEADS, 2, 2, 12, dropout=0.0, activation=activation, norm_first=norm_first),
                    ref, [(N, T_SRC, D), (N, T_TGT, D)])
    (src, tgt), (src_t, tgt_t) = _inputs(rng, (N, T_SRC, D), (N, T_TGT, D))
    src_padding = np.zeros((N, T_SRC), dtype=bool)
    src_padding[0, 3:] = True
    src_padding[2, 0] = True
    tgt_padding = np.zeros((N, T_TGT), dtype=bool)
    tgt_padding[1, 2:] = True
    masks = {"tgt_mask": Transformer.generate_square_subsequent_mask(T_TGT, np.float64),
             "src_key_padding_mask": src_padding, "tgt_key_padding_mask": tgt_padding,
             "memory_key_padding_mask": src_padding}

    out = model(src, tgt, **masks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Support for mismatched key_padding_mask")
        expected = ref.eval()(src_t, tgt_t, **_as_torch(masks))
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "output")
    up = rng.standard_normal(out.shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(src.grad, src_t.grad.numpy(), RTOL, "gradient of src")
    assert_close(tgt.grad, tgt_t.grad.numpy(), RTOL, "gradient of tgt")
    _check_parameter_grads(model, ref)
    # the causal flag masks as the explicit mask does
    flagged = model(src.numpy(), tgt.numpy(), **{**masks, "tgt_mask": None}, tgt_is_causal=True)
    assert_close(flagged.numpy(), out.numpy(), RTOL, "output with tgt_is_causal")


def test_encoder_stack_matches_torch_with_per_head_masks(f64):
    rng = np.random.default_rng(3)
    torch_layer = torch.nn.TransformerEncoderLayer(D, HEADS, 12, dropout=0.0, batch_first=True, dtype=torch.float64)
    ref = torch.nn.TransformerEncoder(torch_layer, 2, enable_nested_tensor=False)
    _randomize(ref, rng)
    encoder = _loaded(TransformerEncoder(TransformerEncoderLayer(D, HEADS, 12, dropout=0.0), 2), ref, (N, T_SRC, D))
    assert encoder.norm is None and len(encoder.layers) == 2
    (src,), (src_t,) = _inputs(rng, (N, T_SRC, D))
    blocked = rng.random((N * HEADS, T_SRC, T_SRC)) < 0.4       # one mask per sample and head
    blocked[..., 0] = False

    out = encoder(src, mask=blocked)
    expected = ref.eval()(src_t, mask=torch.from_numpy(blocked))
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "output")
    up = rng.standard_normal(out.shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(src.grad, src_t.grad.numpy(), RTOL, "gradient of src")
    _check_parameter_grads(encoder, ref)


def test_float_key_padding_masks_without_attention_masks_match_torch(f64):
    rng = np.random.default_rng(4)
    torch_layer = torch.nn.TransformerEncoderLayer(D, HEADS, 12, dropout=0.0, batch_first=True, dtype=torch.float64)
    ref = torch.nn.TransformerEncoder(torch_layer, 1, enable_nested_tensor=False)
    _randomize(ref, rng)
    encoder = _loaded(TransformerEncoder(TransformerEncoderLayer(D, HEADS, 12, dropout=0.0), 1), ref, (N, T_SRC, D))
    (src,), (src_t,) = _inputs(rng, (N, T_SRC, D))
    padding = rng.standard_normal((N, T_SRC))
    padding[0, 2] = -1e9
    out = encoder(src, src_key_padding_mask=padding)
    expected = ref.eval()(src_t, src_key_padding_mask=torch.from_numpy(padding))
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "encoder output")

    ref = torch.nn.TransformerDecoderLayer(D, HEADS, 12, dropout=0.0, batch_first=True, dtype=torch.float64)
    _randomize(ref, rng)
    layer = _loaded(TransformerDecoderLayer(D, HEADS, 12, dropout=0.0), ref, [(N, T_TGT, D), (N, T_SRC, D)])
    (tgt, memory), (tgt_t, memory_t) = _inputs(rng, (N, T_TGT, D), (N, T_SRC, D))
    masks = {"tgt_key_padding_mask": rng.standard_normal((N, T_TGT)), "memory_key_padding_mask": padding}
    out = layer(tgt, memory, **masks)
    expected = ref.eval()(tgt_t, memory_t, **_as_torch(masks))
    assert_close(out.numpy(), expected.detach().numpy(), RTOL, "decoder layer output")
    up = rng.standard_normal(out.shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(memory.grad, memory_t.grad.numpy(), RTOL, "gradient of memory")


def test_generate_square_subsequent_mask_is_torchs():
    ours = Transformer.generate_square_subsequent_mask(5)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, torch.nn.Transformer.generate_square_subsequent_mask(5).numpy())


def test_decoder_layer_gradcheck(f64):
    rng = np.random.default_rng(4)
    layer = TransformerDecoderLayer(4, 2, dim_feedforward=6, dropout=0.0, activation="gelu")
    tgt = lamina.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True, dtype=np.float64)
    memory = lamina.tensor(rng.standard_normal((2, 4, 4)), requires_grad=True, dtype=np.float64)
    layer.build([tgt.shape, memory.shape])
    for p in layer.parameters():
        p.data = p.data + 0.4 * rng.standard_normal(p.shape)
    padding = np.array([[False, False, False, True], [False, True, False, False]])

    def run(t, m, *_):
        return layer(t, m, tgt_is_causal=True, memory_key_padding_mask=padding)

    assert lamina.gradcheck(run, tgt, memory, *layer.parameters())


def test_masks_change_what_is_seen():
    rng = np.random.default_rng(5)
    layer = TransformerDecoderLayer(D, HEADS, 16, dropout=0.0).eval()
    tgt = rng.standard_normal((2, T_TGT, D)).astype(np.float32)
    memory = rng.standard_normal((2, T_SRC, D)).astype(np.float32)
    base = layer(tgt, memory, tgt_is_causal=True).numpy()
    later = tgt.copy()
    later[:, 2] += 1.0
    changed = layer(later, memory, tgt_is_causal=True).numpy()
    np.testing.assert_array_equal(changed[:, :2], base[:, :2])      # steps before 2 do not see it
    assert not np.allclose(changed[:, 2:], base[:, 2:])
    padding = np.zeros((2, T_SRC), dtype=bool)
    padding[:, 3:] = True
    hidden = memory.copy()
    hidden[:, 3:] = rng.standard_normal((2, 2, D))
    np.testing.assert_allclose(layer(tgt, hidden, memory_key_padding_mask=padding).numpy(),
                               layer(tgt, memory, memory_key_padding_mask=padding).numpy(), rtol=1e-6)


def test_dropout_acts_only_in_training():
    rng = np.random.default_rng(6)
    tgt = rng.standard_normal((2, T_TGT, D)).astype(np.float32)
    memory = rng.standard_normal((2, T_SRC, D)).astype(np.float32)
    layer = TransformerDecoderLayer(D, HEADS, 16, dropout=0.5)
    assert not np.allclose(layer(tgt, memory).numpy(), layer(tgt, memory).numpy())
    plain = TransformerDecoderLayer(D, HEADS, 16, dropout=0.0)
    plain(tgt, memory)
    plain.load_state_dict(layer.state_dict())
    layer.eval()
    np.testing.assert_array_equal(layer(tgt, memory).numpy(), plain(tgt, memory).numpy())
    model = Transformer(D, HEADS, 1, 1, 16, dropout=0.5)
    assert not np.allclose(model(memory, tgt).numpy(), model(memory, tgt).numpy())
    model.eval()
    np.testing.assert_array_equal(model(memory, tgt).numpy(), model(memory, tgt).numpy())


def test_stacks_hold_independent_copies():
    layer = TransformerDecoderLayer(D, HEADS, 16, name="block")
    decoder = TransformerDecoder(layer, 3, norm=nn.LayerNorm(-1))
    rng = np.random.default_rng(7)
    tgt, memory = (rng.standard_normal((2, t, D)).astype(np.float32) for t in (T_TGT, T_SRC))
    decoder(tgt, memory)
    assert not layer.built and all(copy is not layer for copy in decoder.layers)
    first, second = (dict(m.named_parameters()) for m in decoder.layers[:2])
    assert not np.allclose(first["linear1.weight"].numpy(), second["linear1.weight"].numpy())
    names = list(decoder.state_dict())
    assert "layers.2.cross_attention.in_weight" in names and names[-2:] == ["norm.weight", "norm.bias"]


def test_bad_inputs_raise_named_errors():
    layer = TransformerDecoderLayer(8, 2, 16, name="dec")
    tgt = np.zeros((2, 3, 8), dtype=np.float32)
    memory = np.zeros((2, 5, 8), dtype=np.float32)
    with pytest.raises(lamina.ShapeError, match=r"TransformerDecoderLayer 'dec'.*\(2, 3, 8\).*\(2, 5, 6\).*"
                                                r"\(batch, time, 8\)"):
        layer(tgt, memory[..., :6])
    with pytest.raises(lamina.ShapeError, match=r"'dec'.*\(2, 3, 8\).*\(4, 5, 8\).*batch size"):
        layer(tgt, np.zeros((4, 5, 8), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"'dec': tgt_mask of shape \(3, 4\); expected \(3, 3\) or "
                                                r"\(batch \* num_heads, 3, 3\) = \(4, 3, 3\)"):
        layer(tgt, memory, tgt_mask=np.zeros((3, 4), dtype=bool))
    with pytest.raises(lamina.ShapeError, match=r"memory_mask of shape \(2, 3, 5\).*\(4, 3, 5\)"):
        layer(tgt, memory, memory_mask=np.zeros((2, 3, 5), dtype=bool))
    with pytest.raises(lamina.ShapeError, match=r"memory_key_padding_mask of shape \(2, 3\); expected .*\(2, 5\)"):
        layer(tgt, memory, memory_key_padding_mask=np.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"tgt_key_padding_mask must be boolean .* or float .*int64"):
        layer(tgt, memory, tgt_key_padding_mask=np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(lamina.ShapeError, match=r"Transformer: src of shape \(2, 5, 8\) and tgt of shape "
                                                r"\(3, 3, 8\) must share the batch size"):
        Transformer(8, 2, 1, 1, 16)(memory, np.zeros((3, 3, 8), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"TransformerEncoder: got a source shape \(2, 5, 6\); expected "
                                                r"\(batch, time, 8\)"):
        TransformerEncoder(TransformerEncoderLayer(8, 2, 16), 1)(memory[..., :6])
    with pytest.raises(TypeError, match="TransformerDecoder: expected a TransformerDecoderLayer"):
        TransformerDecoder(TransformerEncoderLayer(8, 2), 2)
    with pytest.raises(ValueError, match="num_layers must be a positive int, got 0"):
        TransformerEncoder(TransformerEncoderLayer(8, 2), 0)
    with pytest.raises(ValueError, match="d_model 10 is not divisible by num_heads 3"):
        TransformerDecoderLayer(10, 3)
    with pytest.raises(ValueError, match="dropout"):
        TransformerDecoderLayer(8, 2, dropout=1.0)


def test_configs_round_trip():
    rng = np.random.default_rng(8)
    tgt = rng.standard_normal((2, T_TGT, D)).astype(np.float32)
    memory = rng.standard_normal((2, T_SRC, D)).astype(np.float32)
    layer = TransformerDecoderLayer(D, HEADS, 16, dropout=0.2, activation="gelu", norm_first=True,
                                    layer_norm_eps=1e-6, name="block")
    decoder = TransformerDecoder(layer, 2, norm=nn.LayerNorm(-1, eps=1e-4))
    model = Transformer(D, HEADS, 2, 1, 16, dropout=0.2, activation="gelu", norm_first=True, layer_norm_eps=1e-6)
    for module, args in ((layer, (tgt, memory)), (decoder, (tgt, memory)), (model, (memory, tgt))):
        y = module.eval()(*args).numpy()
        clone = layer_from_config(layer_to_config(module))
        assert type(clone) is type(module) and clone.get_config() == module.get_config()
        clone(*args)
        assert list(clone.state_dict()) == list(module.state_dict())
        clone.load_state_dict(module.state_dict())
        np.testing.assert_array_equal(clone.eval()(*args).numpy(), y)
    assert decoder.layers[1].norm3.eps == 1e-6 and decoder.norm.eps == 1e-4
    assert model.decoder.layers[0].cross_attention.dropout == 0.2 and model.encoder.layers[1].norm_first


def test_transformer_saves_and_loads(tmp_path):
    rng = np.random.default_rng(9)
    src = rng.standard_normal((2, T_SRC, D)).astype(np.float32)
    tgt = rng.standard_normal((2, T_TGT, D)).astype(np.float32)
    model = Transformer(D, HEADS, 1, 2, 16).eval()
    y = model(src, tgt, tgt_is_causal=True).numpy()
    path = tmp_path / "transformer.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    assert isinstance(loaded, Transformer)
    np.testing.assert_array_equal(loaded(src, tgt, tgt_is_causal=True).numpy(), y)


class _Reverser(nn.Module):
    """Token ids -> Transformer -> scores over the vocabulary; id ``vocab`` starts the target."""

    def __init__(self, vocab: int, d_model: int):
        super().__init__()
        self.embed = nn.Embedding(vocab + 1, d_model)
        self.position = nn.PositionalEncoding(16)
        self.transformer = Transformer(d_model, 2, 1, 1, 64, dropout=0.0)
        self.head = nn.Dense(vocab)

    def forward(self, src, tgt_in):
        mask = Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        return self.head(self.transformer(self.position(self.embed(src)), self.position(self.embed(tgt_in)),
                                          tgt_mask=mask))

    def greedy(self, src, start: int):
        """Each next token is the argmax given the ones chosen so far (the encoder runs once)."""
        memory = self.transformer.encoder(self.position(self.embed(src)))
        out = np.full((src.shape[0], 1), start)
        for _ in range(src.shape[1]):
            hidden = self.transformer.decoder(self.position(self.embed(out)), memory, tgt_is_causal=True)
            scores = self.head(hidden).numpy()[:, -1]
            out = np.concatenate([out, scores.argmax(axis=-1)[:, None]], axis=1)
        return out[:, 1:]


def test_small_transformer_learns_to_reverse_sequences():
    """Teacher forcing on reversed copies, then greedy decoding of unseen sequences."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(10)
    vocab, length = 8, 6
    model = _Reverser(vocab, 32)
    loss = functools.partial(F.categorical_cross_entropy, from_logits=True)
    model(np.zeros((1, length), dtype=np.int64), np.zeros((1, length), dtype=np.int64))
    opt = optim.Adam(model, lr=0.005)
    # products this small gain nothing from BLAS's own threads, which cost time on a busy machine
    with parallel.one_blas_thread():
        for _ in range(300):       # 200 steps reach 0.93-1.0 depending on the CPU's GEMM rounding
            src = rng.integers(0, vocab, (64, length))
            target = src[:, ::-1]
            tgt_in = np.concatenate([np.full((64, 1), vocab), target[:, :-1]], axis=1)
            opt.zero_grad()
            cost = loss(model(src, tgt_in), target)
            cost.backward()
            opt.step()
        model.eval()
        src = rng.integers(0, vocab, (200, length))
        with lamina.no_grad():
            decoded = model.greedy(src, vocab)
    accuracy = (decoded == src[:, ::-1]).mean()
    assert accuracy >= 0.95, accuracy
