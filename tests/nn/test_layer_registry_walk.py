"""Every public layer of ``lamina.nn`` (and of ``lamina.nn.ptq``) can be saved by architecture
config, or is allow-listed with the reason it cannot: a new layer left unregistered fails
:func:`test_every_public_layer_is_registered_or_allow_listed`.

The layers registered lately are each built with tiny sizes, run once, written by
``lamina.save`` and read back by ``lamina.load`` (or, for graph layers, whose inputs a sample of
zeros cannot stand for, rebuilt from their JSON config and given the saved state dict); the
copy must give the same outputs on the same input, bit for bit.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.autograd import no_grad
from lamina.export.onnx_graph import _CONVERTERS
from lamina.io import load_file, save_file
from lamina.models import GPT2
from lamina.nn import ptq

# Public Module subclasses that cannot be saved by architecture config, and why.
_CONTAINER = "a bare container of sub-modules or arrays without a forward of its own"
_BASE = "an abstract base class: its registered subclasses are the layers"
_LOSS = "a training objective called with predictions and targets, not a part of a model's architecture"
ALLOW_LIST = {
    "Module": _BASE,
    "BayesianLayer": _BASE,
    "SpikingNeuron": _BASE,
    "ModuleDict": _CONTAINER,
    "ModuleList": _CONTAINER,
    "ParameterDict": _CONTAINER,
    "ParameterList": _CONTAINER,
    **{name: _LOSS for name in (
        "BCELoss", "BCEWithLogitsLoss", "CTCLoss", "CosineEmbeddingLoss", "CrossEntropyLoss", "GaussianNLLLoss",
        "HingeEmbeddingLoss", "HuberLoss", "KLDivLoss", "L1Loss", "MSELoss", "MarginRankingLoss",
        "MultiLabelMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss", "NLLLoss", "PoissonNLLLoss",
        "SmoothL1Loss", "SoftMarginLoss", "TripletMarginLoss", "TripletMarginWithDistanceLoss", "RelativeLpLoss",
        "PerceptualLoss", "GE2ELoss", "ArcFaceLoss", "CenterLoss", "CombinedMarginLoss", "CosFaceLoss",
        "NormalizedSoftmaxLoss", "SphereFaceLoss", "SubCenterArcFace")},
}


def public_layer_classes() -> dict[str, type]:
    found = {}
    for package in (nn, ptq):
        for name in package.__all__:
            value = getattr(package, name)
            if inspect.isclass(value) and issubclass(value, nn.Module):
                found[name] = value
    return found


def test_every_public_layer_is_registered_or_allow_listed():
    registered = set(nn.registered_layers().values())
    classes = public_layer_classes()
    missing = sorted(name for name, cls in classes.items() if cls not in registered and name not in ALLOW_LIST)
    assert not missing, f"public layers neither registered nor allow-listed: {missing}"
    stale = sorted(name for name in ALLOW_LIST if name not in classes or classes[name] in registered)
    assert not stale, f"allow-listed names that are registered or no longer public: {stale}"


def test_registered_layers_built_without_arguments_round_trip_their_config():
    """Every registered public layer that can be made with no argument gives back the same
    config after a trip through JSON and :func:`lamina.nn.layer_from_config`."""
    registered = set(nn.registered_layers().values())
    checked = 0
    for name, cls in public_layer_classes().items():
        if cls not in registered:
            continue
        try:
            layer = cls()
        except (TypeError, ValueError):
            continue                     # needs arguments: the layers registered here are built below
        twin = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
        assert type(twin) is cls and twin.get_config() == layer.get_config(), name
        checked += 1
    assert checked > 100


# -- round trips -------------------------------------------------------------------------
def _points(*shape, seed=0):
    return (0.3 * np.random.default_rng(seed).uniform(-1, 1, shape)).astype(np.float32)


def _sequence(n=2, t=5, features=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, t, features)).astype(np.float32)


_EDGES = np.array([[0, 1, 2, 3, 4, 1], [1, 2, 3, 4, 0, 3]])


def _built_dense(units, n_in, **kwargs):
    dense = nn.Dense(units, **kwargs)
    dense(np.random.default_rng(3).normal(size=(2, n_in)).astype(np.float32))
    return dense


def _hetero_conv():
    convs = {("paper", "cites", "paper"): nn.GCNConv(3), ("author", "writes", "paper"): nn.GraphConv(3),
             ("paper", "written_by", "author"): nn.SAGEConv(3)}
    return nn.HeteroConv(convs, aggr="mean")


def _hetero_inputs():
    rng = np.random.default_rng(4)
    x = {"paper": rng.normal(size=(4, 3)).astype(np.float32), "author": rng.normal(size=(3, 3)).astype(np.float32)}
    edges = {("paper", "cites", "paper"): np.array([[0, 1, 2], [1, 2, 3]]),
             ("author", "writes", "paper"): np.array([[0, 1, 2, 2], [0, 1, 2, 3]]),
             ("paper", "written_by", "author"): np.array([[0, 1, 2, 3], [0, 1, 2, 2]])}
    return x, edges


def _quant_dense(**kwargs):
    dense = _built_dense(3, 8, activation="relu")
    return ptq.QuantDense.from_dense(dense, bits=4, group_size=4, **kwargs)


@nn.register_layer
class WalkDynamics(nn.Module):
    """dh/dt = tanh(h W) + t: a registered (t, h) function for ODEBlock."""

    def __init__(self, features: int, name: str | None = None):
        super().__init__(name=name)
        self.features = features
        self.add_parameter("weight", 0.5 * np.eye(features, dtype=np.float32))
        self.built = True

    def forward(self, t, h):
        return lamina.functional.tanh(lamina.functional.matmul(h, self.weight)) + t

    def get_config(self) -> dict:
        return {"features": self.features, "name": self.name}


@nn.register_layer
class WalkContraction(nn.Module):
    """f(z, x) = 0.5 tanh(z W + x): a registered contraction for DEQ."""

    def __init__(self, features: int, name: str | None = None):
        super().__init__(name=name)
        self.features = features
        self.add_parameter("weight", 0.3 * np.eye(features, dtype=np.float32))
        self.built = True

    def forward(self, z, x):
        return 0.5 * lamina.functional.tanh(lamina.functional.matmul(z, self.weight) + x)

    def get_config(self) -> dict:
        return {"features": self.features, "name": self.name}


def _merged(layer):
    layer.merge()
    return layer


def _vera():
    rng = np.random.default_rng(5)
    shared_a, shared_b = rng.normal(size=(6, 2)).astype(np.float32), rng.normal(size=(2, 5)).astype(np.float32)
    return nn.VeRADense(_built_dense(4, 3), shared_a, shared_b, d_initial=0.2)


def _hypernetwork(**kwargs):
    target = nn.Sequential(nn.Dense(3, activation="tanh"), nn.Dense(2))
    target(np.zeros((1, 4), np.float32))
    return nn.HyperNetwork(target, embedding_dim=3, chunk_size=8, hidden=5, **kwargs)


def _lora_4bit():
    return nn.LoRADense(nn.Dense4bit.from_dense(_built_dense(4, 16), blocksize=16), r=2)


def _observed(layer, *shape):
    """``layer`` after one call in training mode on an input of ``shape`` (an observer's range)."""
    layer.train()
    with no_grad():
        layer(np.random.default_rng(6).normal(size=shape).astype(np.float32))
    return layer


def _activation_observer():
    return nn.MovingAverageMinMaxObserver(0.5, "uint8", "per_tensor_affine", 0, 255)


def _qat_dense():
    return _observed(nn.QATDense.from_float(_built_dense(4, 3), (-127, 127), _activation_observer()), 2, 3)


def _fp8_dense():
    layer = lamina.amp.FP8Dense(4, amax_history_len=3)
    layer(lamina.tensor(_points(2, 3), requires_grad=True)).sum().backward()      # a step of scaling state
    return layer


def _qat_conv():
    conv = nn.Conv2D(3, 3, padding="same")
    conv(np.zeros((1, 5, 5, 2), np.float32))
    return _observed(nn.QATConv2D.from_float(conv, (-127, 127), nn.MinMaxObserver("uint8")), 1, 5, 5, 2)


def _gpt2():
    model = GPT2(vocab_size=11, n_positions=8, n_embd=4, n_layer=1, n_head=2, embd_pdrop=0.0, resid_pdrop=0.0,
                 attn_pdrop=0.0)
    model(np.zeros((1, 3), np.int64))
    return model


def _ids():
    return (np.random.default_rng(8).integers(0, 11, (2, 4)),)


def _quant_attention():
    attention = nn.MultiHeadAttention(8, 2)
    attention(_points(1, 3, 8))
    ptq.quantize_projection(attention, "in_weight", ptq.rtn_quantize_weight(attention.in_weight.data, 4, 4))
    return attention


def _DENSE_IN():  # noqa: N802  (an inputs factory, named as a constant)
    return (_points(2, 3),)

# name -> (layer factory, inputs factory, how the copy is made: "save" (lamina.save/lamina.load)
# or "config" (JSON config + state dict, the layer built on the real inputs)[, keyword arguments of the call])
CASES = {
    "HypLinear": (lambda: nn.HypLinear(3, 2, ball=0.7), lambda: (_points(4, 3),), "save"),
    "HypAct": (lambda: nn.HypAct("tanh", ball_in=1.0, ball_out=0.5), lambda: (_points(4, 3),), "save"),
    "PoincareEmbedding": (lambda: nn.PoincareEmbedding(6, 3, ball=2.0, init_scale=0.1),
                          lambda: (np.array([[0, 5], [2, 3]]),), "save"),
    "HyperbolicMLR": (lambda: nn.HyperbolicMLR(3, 4, ball=1.5), lambda: (_points(4, 3),), "save"),
    "MinGRU": (lambda: nn.MinGRU(3, 4), lambda: (_sequence(),), "save"),
    "MinLSTM": (lambda: nn.MinLSTM(3, 4, mode="log"), lambda: (_sequence(),), "save"),
    "LRU": (lambda: nn.LRU(3, 4, r_min=0.5, r_max=0.9, max_phase=3.0), lambda: (_sequence(),), "save"),
    "RGLRU": (lambda: nn.RGLRU(4, num_blocks=2, min_rad=0.8), lambda: (_sequence(features=4),), "save"),
    "GriffinRecurrentBlock": (lambda: nn.GriffinRecurrentBlock(3, lru_width=4, num_blocks=2, conv_width=3),
                              lambda: (_sequence(),), "save"),
    "S4D": (lambda: nn.S4D(3, 4, init="inv", dt_min=1e-2, dt_max=0.5), lambda: (_sequence(),), "save"),
    "sLSTM": (lambda: nn.sLSTM(3, 4), lambda: (_sequence(),), "save"),
    "mLSTM": (lambda: nn.mLSTM(3, 4), lambda: (_sequence(),), "save"),
    "WeightDrop": (lambda: nn.WeightDrop(nn.LSTM(4, return_sequences=True), 0.3), lambda: (_sequence(),), "save"),
    "LockedDropout": (lambda: nn.LockedDropout(0.3), lambda: (_sequence(),), "save"),
    "HeteroConv": (_hetero_conv, _hetero_inputs, "config"),
    "GPSLayer": (lambda: nn.GPSLayer(4, heads=2, mlp_ratio=3), lambda: (_points(5, 4), _EDGES), "config"),
    "GPSLayer-no-local": (lambda: nn.GPSLayer(4, conv=False), lambda: (_points(5, 4), _EDGES), "config"),
    "GraphormerLayer": (lambda: nn.GraphormerLayer(4, heads=2, max_distance=2, ffn_ratio=3),
                        lambda: (_points(5, 4), _EDGES), "config"),
    "CentralityEncoding": (lambda: nn.CentralityEncoding(2), lambda: (_points(5, 4), _EDGES), "config"),
    "QuantDense": (_quant_dense, lambda: (_points(2, 8),), "save"),
    "QuantDense-input-scale": (lambda: _quant_dense(input_scale=np.linspace(0.5, 2.0, 8)),
                               lambda: (_points(2, 8),), "save"),
    "W8A8Dense": (lambda: ptq.W8A8Dense(_built_dense(3, 5, activation="tanh")), lambda: (_points(2, 5),), "save"),
    "LoRAAdapter": (lambda: nn.LoRAAdapter(3, 4, r=2, alpha=3.0), _DENSE_IN, "save"),
    "LoRADense": (lambda: nn.LoRADense(_built_dense(4, 3, activation="relu"), r=2), _DENSE_IN, "save"),
    "LoRADense-merged": (lambda: _merged(nn.LoRADense(_built_dense(4, 3), r=2)), _DENSE_IN, "save"),
    "LoRADense-4bit": (_lora_4bit, lambda: (_points(2, 16),), "save"),
    "DoRADense": (lambda: nn.DoRADense(_built_dense(4, 3), r=2, alpha=2.0), _DENSE_IN, "save"),
    "DoRADense-merged": (lambda: _merged(nn.DoRADense(_built_dense(4, 3), r=2)), _DENSE_IN, "save"),
    "IA3Scale": (lambda: nn.IA3Scale(3), _DENSE_IN, "save"),
    "IA3Dense": (lambda: nn.IA3Dense(_built_dense(4, 3), feedforward=True), _DENSE_IN, "save"),
    "IA3Dense-merged": (lambda: _merged(nn.IA3Dense(_built_dense(4, 3))), _DENSE_IN, "save"),
    "LoHaDense": (lambda: nn.LoHaDense(_built_dense(4, 3), r=2, alpha=3.0), _DENSE_IN, "save"),
    "LoKrDense": (lambda: nn.LoKrDense(_built_dense(4, 4), r=1), lambda: (_points(2, 4),), "save"),
    "LoKrDense-merged": (lambda: _merged(nn.LoKrDense(_built_dense(4, 4), r=1)), lambda: (_points(2, 4),), "save"),
    "VeRADense": (_vera, _DENSE_IN, "save"),
    "BottleneckAdapter": (lambda: nn.BottleneckAdapter(3, 2, activation="gelu", up_std=0.1), _DENSE_IN, "save"),
    "WithAdapter": (lambda: nn.WithAdapter(nn.Dense(4), nn.BottleneckAdapter(4, 2)), _DENSE_IN, "save"),
    "ODEBlock": (lambda: nn.ODEBlock(WalkDynamics(3), t=(0.0, 0.5), method="rk4", options={"step_size": 0.125}),
                 _DENSE_IN, "save"),
    "DEQ": (lambda: nn.DEQ(WalkContraction(3), solver="anderson", tol=1e-5, max_iter=40), _DENSE_IN, "save"),
    "HyperNetwork": (_hypernetwork, lambda: (_points(2, 4),), "save"),
    "HyperNetwork-tasks": (lambda: _hypernetwork(num_tasks=2, task_dim=3), lambda: (_points(2, 4),), "save",
                           {"task": 1}),
    "MinMaxObserver": (lambda: _observed(nn.MinMaxObserver("int8", "per_tensor_symmetric"), 2, 3), _DENSE_IN,
                       "save"),
    "MovingAverageMinMaxObserver": (lambda: _observed(_activation_observer(), 2, 3), _DENSE_IN, "save"),
    "PerChannelMinMaxObserver": (lambda: _observed(nn.PerChannelMinMaxObserver(ch_axis=1), 2, 3), _DENSE_IN,
                                 "save"),
    "FakeQuantize": (lambda: _observed(nn.FakeQuantize(_activation_observer()), 2, 3), _DENSE_IN, "save"),
    "FakeQuantize-per-channel": (lambda: _observed(nn.FakeQuantize(nn.PerChannelMinMaxObserver(ch_axis=-1)), 2, 3),
                                 _DENSE_IN, "save"),
    "QATDense": (_qat_dense, _DENSE_IN, "save"),
    "FP8Dense": (_fp8_dense, _DENSE_IN, "save"),
    "QATConv2D": (_qat_conv, lambda: (_points(1, 5, 5, 2),), "save"),
    "PromptTuningLM": (lambda: nn.PromptTuningLM(_gpt2(), 3), _ids, "save"),
    "PromptTuningLM-encoder": (lambda: nn.PromptTuningLM(_gpt2(), 2, prompt_encoder="mlp", encoder_hidden_size=5),
                               _ids, "save"),
    "PrefixTuningLM": (lambda: nn.PrefixTuningLM(_gpt2(), 2, prefix_projection=True, encoder_hidden_size=5), _ids,
                       "save"),
    "QuantMultiHeadAttention": (_quant_attention, lambda: (_points(2, 3, 8),), "save"),
    "MixtureOfDepths": (lambda: nn.MixtureOfDepths(nn.Dense(3, activation="tanh"), capacity=0.5),
                        lambda: (_sequence(2, 6, 3),), "save"),
    "BitLinear": (lambda: nn.BitLinear(4, activation="relu", use_bias=True, norm=False), _DENSE_IN, "save"),
    "BitLinear-norm": (lambda: nn.BitLinear(3, eps=1e-5), lambda: (_sequence(2, 4, 3),), "save"),
    "ResidualVQ": (lambda: nn.ResidualVQ(3, 4, 3, quantizer_dropout=True, seed=0), lambda: (_sequence(2, 5, 3),),
                   "save"),
    "ResidualVQ-ema": (lambda: nn.ResidualVQ(2, 5, 3, ema=True, quantizer_dropout=True, seed=1, decay=0.9,
                                             dead_code_threshold=0.5), lambda: (_sequence(2, 5, 3),), "save",
                       {"n_q": 1}),
    "HashGridEncoding": (lambda: nn.HashGridEncoding(3, num_levels=3, log2_hashmap_size=6, base_resolution=2),
                         lambda: (_points(4, 3) + 0.5,), "save"),
    "HashGridMLP": (lambda: nn.HashGridMLP(2, 2, hidden=4, encoding={"num_levels": 2, "log2_hashmap_size": 4,
                                                                     "bounds": (-1, 1)}),
                    lambda: (_points(4, 2),), "save"),
    "Mamba2Block": (lambda: nn.Mamba2Block(4, d_state=3, d_conv=2, headdim=2, ngroups=2, chunk_size=2),
                    lambda: (_sequence(2, 5, 4),), "save"),
    "DeltaNet": (lambda: nn.DeltaNet(4, 2, conv_size=3, use_gate=True, chunk_size=2), lambda: (_sequence(2, 5, 4),),
                 "save"),
    "GatedDeltaNet": (lambda: nn.GatedDeltaNet(4, 2, use_short_conv=False, form="recurrent", dt_min=0.01),
                      lambda: (_sequence(2, 5, 4),), "save"),
    "GatedLinearAttention": (lambda: nn.GatedLinearAttention(4, 2, gate_low_rank_dim=3, gate_logit_normalizer=8.0,
                                                             use_short_conv=True, chunk_size=3),
                             lambda: (_sequence(2, 5, 4),), "save"),
    "DyT": (lambda: nn.DyT(3, alpha_init=0.7), lambda: (_sequence(2, 4, 3),), "save"),
    "GlobalResponseNorm": (lambda: nn.GlobalResponseNorm(3, eps=1e-5), lambda: (_points(2, 3, 4, 3),), "save"),
    "RandomFeatureGaussianProcess": (lambda: nn.RandomFeatureGaussianProcess(3, num_inducing=8, likelihood="logistic",
                                                                             normalize_input=True, scale=0.5),
                                     _DENSE_IN, "save", {"return_variance": True}),
    "BoundedSpectralNorm": (lambda: nn.BoundedSpectralNorm(_built_dense(4, 3), norm_bound=0.5), _DENSE_IN, "save"),
    "SNGPResMLP": (lambda: nn.SNGPResMLP(2, hidden=4, num_layers=2, gp={"num_inducing": 6, "momentum": 0.9}),
                   _DENSE_IN, "save", {"return_variance": True}),
    "NoisyDense": (lambda: nn.NoisyDense(4, sigma0=0.4, activation="relu"), _DENSE_IN, "save"),
    "NoisyDense-independent": (lambda: nn.NoisyDense(2, factorised=False), _DENSE_IN, "save"),
    "LinformerAttention": (lambda: nn.LinformerAttention(4, 8, proj_dim=3, num_heads=2), lambda: (_sequence(2, 6, 4),),
                           "save"),
    "NystromAttention": (lambda: nn.NystromAttention(4, 2, num_landmarks=3, conv_kernel_size=3),
                         lambda: (_sequence(2, 6, 4),), "save"),
    "LSHAttention": (lambda: nn.LSHAttention(4, 2, num_buckets=4, num_hashes=2, chunk_size=3, causal=True, seed=1),
                     lambda: (_sequence(2, 6, 4),), "save"),
    "ScaledStdConv2D": (lambda: nn.ScaledStdConv2D(4, 3, stride=2, padding=1, groups=2, gamma=1.7, eps=1e-5),
                        lambda: (_points(1, 5, 5, 2),), "save"),
    "SelfAttention2D": (lambda: nn.SelfAttention2D(8, reduction=4, spectral_norm=True), lambda: (_points(2, 4, 6, 8),),
                        "save"),
}


def _flat(output) -> list[np.ndarray]:
    if isinstance(output, dict):
        return [a for key in sorted(output) for a in _flat(output[key])]
    if isinstance(output, (tuple, list)):
        return [a for item in output for a in _flat(item)]
    return [np.asarray(output.numpy() if hasattr(output, "numpy") else output)]


def _perturb(layer) -> None:
    """Move every parameter away from its initial value, so that a copy with fresh weights
    (zeros, ones) could not pass for a loaded one."""
    rng = np.random.default_rng(7)
    for param in layer.parameters():
        param.data = (param.data + 0.05 * rng.normal(size=param.shape)).astype(param.dtype)


def _copy_by_config(layer, inputs, path):
    """The layer rebuilt from its JSON config, built on ``inputs``, given the state dict saved to ``path``."""
    save_file({k: lamina.backend.to_numpy(v) for k, v in layer.state_dict().items()}, path)
    twin = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
    twin.eval()
    with no_grad():
        twin(*inputs)
    twin.load_state_dict(load_file(path)[0])
    return twin


@pytest.mark.parametrize("case", sorted(CASES))
def test_registered_layer_round_trips(case, tmp_path):
    make_layer, make_inputs, how, *options = CASES[case]
    kwargs = options[0] if options else {}
    layer, inputs = make_layer(), make_inputs()
    assert type(layer) in set(nn.registered_layers().values())
    layer.eval()
    with no_grad():
        layer(*inputs, **kwargs)                    # builds lazily created weights
    _perturb(layer)
    with no_grad():
        expected = _flat(layer(*inputs, **kwargs))
    path = tmp_path / "layer.safetensors"
    if how == "save":
        lamina.save(layer, path)
        twin = lamina.load(path)
    else:
        twin = _copy_by_config(layer, inputs, path)
    assert type(twin) is type(layer) and twin.get_config() == layer.get_config()
    state, twin_state = layer.state_dict(), twin.state_dict()
    assert sorted(twin_state) == sorted(state)
    to_numpy = lamina.backend.to_numpy
    assert all(np.array_equal(to_numpy(twin_state[k]), to_numpy(v)) for k, v in state.items())
    with no_grad():
        got = _flat(twin(*inputs, **kwargs))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and np.array_equal(a, b), case


def test_registration_leaves_onnx_export_support_as_it_was():
    """Registering a layer adds no ONNX converter: the layers that have one (by their class or a
    base class) are exactly those given converters of their own (minGRU and minLSTM by
    :mod:`lamina.export.onnx_new_sequence_layers`, BitLinear, the hash grids and the Mamba-2
    block by :mod:`lamina.export.onnx_generative_layers`; ScaledStdConv2D, SelfAttention2D, NoisyDense and
    the Linformer and Nystromformer attentions by :mod:`lamina.export.onnx_recent_layers`;
    GlobalResponseNorm by :mod:`lamina.export.onnx_cait_convnextv2`; RGLRU and GriffinRecurrentBlock by
    :mod:`lamina.export.onnx_griffin`; BoundedSpectralNorm by
    SpectralNorm's, which exports the weight the wrapper computes)."""
    classes = {type(case[0]()) for case in CASES.values()}
    has = {cls.__name__ for cls in classes if any(k in _CONVERTERS for k in cls.__mro__)}
    assert has == {"BitLinear", "BottleneckAdapter", "BoundedSpectralNorm", "DoRADense", "FP8Dense",
                   "GlobalResponseNorm", "GriffinRecurrentBlock", "HashGridEncoding", "HashGridMLP", "IA3Dense",
                   "IA3Scale",
                   "LinformerAttention", "LoHaDense", "LoKrDense", "LoRADense", "Mamba2Block", "MinGRU",
                   "MinLSTM", "NoisyDense", "NystromAttention", "RGLRU",
                   "PrefixTuningLM", "PromptTuningLM", "QATConv2D", "QATDense", "QuantDense",
                   "QuantMultiHeadAttention", "ScaledStdConv2D", "SelfAttention2D", "VeRADense", "WithAdapter"}


def test_a_loaded_merged_dora_layer_unmerges_as_the_original(tmp_path):
    layer = nn.DoRADense(_built_dense(4, 3), r=2)
    _perturb(layer)
    layer.merge()
    lamina.save(layer, tmp_path / "dora.safetensors")
    twin = lamina.load(tmp_path / "dora.safetensors")
    assert np.array_equal(twin.merge_factor, layer.merge_factor)
    layer.unmerge()
    twin.unmerge()
    assert "merge_factor" not in twin.state_dict()
    assert np.array_equal(twin.base.weight.numpy(), layer.base.weight.numpy())
