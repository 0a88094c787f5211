"""Every public model class of ``lamina.models`` can be saved by architecture config, or is
allow-listed with the reason it cannot: a new class left unregistered fails
:func:`test_every_public_model_is_registered_or_allow_listed`.

The classes registered by their constructor arguments are each built with tiny sizes, run once,
written by ``lamina.save`` and read back by ``lamina.load`` (or, for models whose inputs a
sample of zeros cannot stand for, rebuilt from their JSON config and given the saved state
dict); the copy must give the same outputs on the same input, bit for bit.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import models, nn
from lamina.autograd import no_grad
from lamina.io import load_file, save_file
from lamina.models.raft import raft
from lamina.models.wav2vec2 import Wav2Vec2ForCTC
from lamina.nn.constructor_config import register_with_arguments

# Public Module subclasses of lamina.models that cannot be saved by architecture config, and why.
_BASE = "an abstract base class: its registered subclasses are the models"
_TRAINING = "a training-time helper (a loss or a queue of past batches), not a part of a model's architecture"
ALLOW_LIST = {
    "Block": _BASE,
    "BranchingNetwork": _BASE,
    "InvertibleLayer": _BASE,
    "KGEModel": _BASE,
    "ReparamBlock": _BASE,
    "DINOLoss": _TRAINING,
    "IBOTLoss": _TRAINING,
    "MoCoQueue": _TRAINING,
    "PINN": "wraps a PDEProblem, a set of Python callables (residual, boundary and initial conditions)",
    "WhisperModel": "Whisper's encoder-decoder container: its WhisperEncoder and WhisperDecoder are built "
                    "by Whisper from Whisper's own config and describe none of their own",
    "ToMeEncoder": "a way of running a ViT's encoder that apply_tome swaps in: a saved model keeps its plain "
                   "encoder, and apply_tome is called again after loading",
    "TGN": "its node memory and neighbour history are the event stream's state (reset_memory, update), which "
           "an architecture config and weights do not hold",
    "Node2Vec": "built around its training graph: the constructor takes the edge_index array (data, "
                "not architecture) and a random seed for the walks",
}


def public_model_classes() -> dict[str, type]:
    return {name: value for name in models.__all__
            if inspect.isclass(value := getattr(models, name)) and issubclass(value, nn.Module)}


def test_every_public_model_is_registered_or_allow_listed():
    registered = set(nn.registered_layers().values())
    classes = public_model_classes()
    missing = sorted(name for name, cls in classes.items() if cls not in registered and name not in ALLOW_LIST)
    assert not missing, f"public models neither registered nor allow-listed: {missing}"
    stale = sorted(name for name in ALLOW_LIST if name not in classes or classes[name] in registered)
    assert not stale, f"allow-listed names that are registered or no longer public: {stale}"


# -- the decorator -------------------------------------------------------------------------
@register_with_arguments
class _Scaled(nn.Module):
    def __init__(self, widths=(2, 3), scale: float = 1.0, name: str | None = None, **options):
        super().__init__(name=name)
        self.widths, self.scale, self.options = widths, scale, options


@register_with_arguments
class _ScaledTwice(_Scaled):
    def __init__(self, factor: int, name: str | None = None):
        super().__init__((factor,), 2.0 * factor, name=name)


@register_with_arguments(modules=("body", "heads"))
class _Wrapper(nn.Module):
    def __init__(self, body, heads, tail=None, name: str | None = None):
        super().__init__(name=name)
        self.body, self.heads = body, nn.ModuleList(heads)


def test_config_is_the_constructor_arguments_in_json_form():
    layer = _Scaled((4, np.int64(5)), np.float32(0.5), kind="a", levels=np.array([1, 2]), dtype=np.float64)
    assert layer.get_config() == {"widths": [4, 5], "scale": 0.5, "name": layer.name, "kind": "a", "levels": [1, 2],
                                 "dtype": "float64"}
    twin = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(layer))))
    assert type(twin) is _Scaled and twin.get_config() == layer.get_config() and twin.options["kind"] == "a"
    assert _ScaledTwice(3, name="s").get_config() == {"factor": 3, "name": "s"}    # a subclass keeps its own


def test_sub_module_arguments_are_saved_as_their_configs():
    layer = _Wrapper(nn.Dense(3, activation="relu"), [nn.Dense(2), nn.Dense(1)], tail=(1, 2))
    config = json.loads(json.dumps(layer.get_config()))
    assert config["body"]["class_name"] == "Dense" and [h["config"]["units"] for h in config["heads"]] == [2, 1]
    twin = _Wrapper.from_config(config)
    assert twin.body.units == 3 and twin.body.get_config() == layer.body.get_config() and twin.heads[1].units == 1


def test_an_argument_json_cannot_hold_is_reported():
    with pytest.raises(ValueError, match="_Scaled.get_config.*JSON"):
        _Scaled(scale=object()).get_config()
    with pytest.raises(ValueError, match="takes no argument"):
        register_with_arguments(modules=("missing",))(type("_Bad", (nn.Module,), {}))


# -- round trips -------------------------------------------------------------------------
def _normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _ids(*shape, high=5, seed=0):
    return np.random.default_rng(seed).integers(0, high, shape)


_EDGES = np.array([[0, 1, 2, 3, 1, 2], [1, 2, 3, 0, 0, 3]])


def _x(*shape):
    return lambda: (_normal(*shape),)


def _wav2vec2_model():
    head = Wav2Vec2ForCTC(vocab_size=5, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=6, conv_dim=(4, 4), conv_kernel=(4, 2), conv_stride=(2, 2),
                          num_conv_pos_embeddings=2, num_conv_pos_embedding_groups=2, mask_time_prob=0.0)
    return head.wav2vec2


@register_with_arguments
class _GaussianEncoder(nn.Module):
    """(mu, log sigma) of each node from two graph convolutions: a registered VGAE encoder."""

    def __init__(self, features: int, name: str | None = None):
        super().__init__(name=name)
        self.mu, self.logstd = nn.GCNConv(features), nn.GCNConv(features)

    def forward(self, x, edge_index):
        return self.mu(x, edge_index), self.logstd(x, edge_index)


def _tiny_raft():
    return raft(feature_layers=(4, 4, 4, 4, 6), context_layers=(4, 4, 4, 4, 8), num_levels=1, radius=1,
                motion_corr_layers=(4, 4), motion_flow_layers=(4, 4), motion_out_channels=6, hidden_size=4,
                flow_head_hidden_size=4, mask_hidden_size=4, input_shape=(16, 16, 3))


def _controlled_unet():
    unet = models.DenoisingUNet(2, (1, 2), groups=2, num_classes=2)
    return models.ControlledDenoiser(unet, models.ControlNet(unet, 1, conditioning_filters=(2,)))


def _tiny_dit():
    return models.DiT(4, 2, 1, dim=8, depth=2, num_heads=2, num_classes=2, class_dropout=0.0, time_dim=4)


def _controlled_dit():
    dit = _tiny_dit()
    return models.ControlledDenoiser(dit, models.DiTControlNet(dit, 2, conditioning_scale=0.5))


def _user_item_graph():
    return models.normalized_adjacency([0, 1, 1, 2, 3], [0, 0, 2, 4, 3], 4, 5)


def _tiny_qformer():
    return models.QFormer(num_queries=2, hidden=4, depth=2, heads=2, vision_dim=6, vocab_size=5, intermediate=6,
                          max_text_len=4, embed_dim=3)


_TINY_BART = {"vocab_size": 7, "d_model": 4, "encoder_layers": 1, "decoder_layers": 2, "encoder_attention_heads": 2,
              "decoder_attention_heads": 2, "encoder_ffn_dim": 6, "decoder_ffn_dim": 5, "max_position_embeddings": 8}
_TINY_BERT = {"vocab_size": 6, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 6, "max_position_embeddings": 8}


# name -> (model factory, inputs factory, how the copy is made: "save" (lamina.save/lamina.load)
# or "config" (JSON config + state dict, the model built on the real inputs)[, keyword arguments of the call])
CASES = {
    # point clouds, sets, graphs
    "PointNet": (lambda: models.PointNet(3, local_widths=(4,), global_widths=(4, 6), head_widths=(4,),
                                         tnet_widths=(4, 4), tnet_head_widths=(4,)), _x(2, 5, 3), "save"),
    "PointNetSegmentation": (lambda: models.PointNetSegmentation(3, local_widths=(4,), global_widths=(4, 6),
                                                                 seg_widths=(4,), tnet_widths=(4, 4),
                                                                 tnet_head_widths=(4,)), _x(2, 5, 3), "save"),
    "SharedMLP": (lambda: models.SharedMLP(3, (4, 2)), _x(2, 5, 3), "save"),
    "TNet": (lambda: models.TNet(3, widths=(4, 4), head_widths=(4,)), _x(2, 5, 3), "save"),
    "PointNet2": (lambda: models.PointNet2(3, [(4, (0.4,), (3,), ((4,),)), (None, (1.0,), (4,), ((6,),))],
                                           head_widths=(4,)), _x(2, 8, 3), "save"),
    "SetAbstraction": (lambda: models.SetAbstraction(0, 4, (0.4,), (3,), ((4,),)), _x(2, 8, 3), "save"),
    "DGCNN": (lambda: models.DGCNN(3, k=3, edge_widths=(4, 4), emb_dims=6, head_widths=(4,)), _x(2, 6, 3), "save"),
    "EdgeConv": (lambda: models.EdgeConv(3, (4,), k=3), _x(2, 6, 3), "save"),
    "PointTransformerLayer": (lambda: models.PointTransformerLayer(4, 3, k=3),
                              lambda: (_normal(2, 6, 3), _normal(2, 6, 4, seed=1)), "save"),
    "PointTransformerBlock": (lambda: models.PointTransformerBlock(4, k=3),
                              lambda: (_normal(2, 6, 3), _normal(2, 6, 4, seed=1)), "save"),
    "TransitionDown": (lambda: models.TransitionDown(4, 5, stride=2, k=3),
                       lambda: (_normal(2, 8, 3), _normal(2, 8, 4, seed=1)), "save"),
    "TransitionUp": (lambda: models.TransitionUp(5, 4, 3), lambda: (_normal(2, 4, 3), _normal(2, 4, 5, seed=1),
                                                                    _normal(2, 8, 3, seed=2),
                                                                    _normal(2, 8, 4, seed=3)), "save"),
    "PointTransformerClassifier": (lambda: models.PointTransformerClassifier(3, widths=(4, 6), blocks=(1, 1),
                                                                             strides=(1, 2), k=3, head_widths=(4,)),
                                   _x(2, 8, 3), "save"),
    "PointTransformerSegmentation": (lambda: models.PointTransformerSegmentation(3, widths=(4, 6), blocks=(1, 1),
                                                                                 strides=(1, 2), k=3),
                                     _x(2, 8, 3), "save"),
    "DeepSets": (lambda: models.DeepSets(nn.Dense(4, activation="relu"), nn.Dense(2), pool="mean"),
                 _x(2, 5, 3), "save"),
    "SetTransformer": (lambda: models.SetTransformer(2, dim_hidden=4, num_heads=2, num_inducing=3,
                                                     num_encoder_blocks=1, num_decoder_blocks=1, ln=True),
                       _x(2, 5, 3), "save"),
    "EGNN": (lambda: models.EGNN(3, hidden=4, out_features=2, num_layers=1, normalize=True),
             lambda: (_normal(4, 3), _normal(4, 3, seed=1), _EDGES), "config"),
    "SchNet": (lambda: models.SchNet(3, hidden=4, num_filters=4, num_interactions=1, num_rbf=5),
               lambda: (_ids(4, high=3), _normal(4, 3), _EDGES), "config"),
    "GAE": (lambda: models.GAE(nn.GCNConv(3)), lambda: (_normal(4, 3), _EDGES), "config"),
    "VGAE": (lambda: models.VGAE(_GaussianEncoder(2)), lambda: (_normal(4, 3), _EDGES), "config"),
    "InnerProductDecoder": (models.InnerProductDecoder, lambda: (_normal(4, 3), _EDGES), "config"),
    # images
    "SRCNN": (lambda: models.SRCNN(1, filters=(4, 2)), _x(1, 6, 6, 1), "save"),
    "CenterNet": (lambda: models.centernet_small(2, in_channels=1, width=2, head_channels=2, score_thresh=0.0,
                                                 detections_per_img=5), _x(1, 8, 8, 1), "save"),
    "CenterNetHead": (lambda: models.CenterNetHead(3, 2, head_channels=2), _x(1, 4, 4, 3), "save"),
    # EfficientDet: BiFPN layers on EfficientNet features, separable class and box nets (the parts
    # take a list of maps, which a saved input shape reads as several inputs: rebuilt from configs)
    "BiFPNLayer": (lambda: models.BiFPNLayer(3, 3), lambda: ([_normal(1, 4, 3, 3), _normal(1, 2, 2, 3, seed=1),
                                                              _normal(1, 1, 1, 3, seed=2)],), "config"),
    "BiFPN": (lambda: models.BiFPN([2, 3], 3, num_layers=2, num_levels=3),
              lambda: ([_normal(2, 4, 4, 2), _normal(2, 2, 2, 3, seed=1)],), "config"),
    "EfficientDetHead": (lambda: models.EfficientDetHead(3, 2, 2, num_layers=1, num_levels=2),
                         lambda: ([_normal(2, 2, 2, 3), _normal(2, 1, 1, 3, seed=1)],), "config"),
    "EfficientNetFeatures": (lambda: models.EfficientNetFeatures(0.25, 0.1, returned_stages=(2, 3)), _x(1, 8, 8, 3),
                             "save"),
    "EfficientDet": (lambda: models.efficientdet_tiny(2, input_shape=(16, 16, 3), score_thresh=0.0,
                                                      detections_per_img=5), _x(1, 16, 16, 3), "save"),
    "YOLOX": (lambda: models.YOLOX(2, 1, width=2, stem_stride=1, score_thresh=0.0, detections_per_img=5),
              _x(1, 16, 16, 1), "save"),
    "Mask2Former": (lambda: models.Mask2Former(2, widths=(4, 4, 4), hidden_dim=8, num_heads=2, num_queries=3,
                                               num_layers=2, dim_feedforward=8), _x(1, 8, 8, 3), "save"),
    "DeformableDETR": (lambda: models.deformable_detr_small(2, input_shape=(16, 16, 3), hidden_dim=8, num_heads=2,
                                                            dim_feedforward=8, num_queries=3, norm_groups=2,
                                                            num_feature_levels=3, with_box_refine=True),
                       _x(1, 16, 16, 3), "save"),
    "DeformableDetrConvBackbone": (lambda: models.DeformableDetrConvBackbone((4, 4, 4), 2), _x(1, 8, 8, 3), "save"),
    "DeformableDetrResNetBackbone": (lambda: models.DeformableDetrResNetBackbone(18), _x(1, 32, 32, 3), "save"),
    "DeformableDetrTransformer": (lambda: models.DeformableDetrTransformer(8, 2, 1, 1, 8, 0.0, 2, 2),
                                  lambda: ([_normal(1, 2, 2, 8), _normal(1, 1, 1, 8, seed=1)],
                                           [_normal(1, 2, 2, 8, seed=2), _normal(1, 1, 1, 8, seed=3)],
                                           _normal(3, 16, seed=4)), "save"),
    "DeformableDetrEncoderLayer": (lambda: models.DeformableDetrEncoderLayer(8, 8, 0.0, 2, 2, 2),
                                   lambda: (_normal(1, 5, 8), _normal(1, 5, 8, seed=1),
                                            np.full((1, 5, 2, 2), 0.4, np.float32), [(2, 2), (1, 1)]), "save"),
    "DeformableDetrDecoderLayer": (lambda: models.DeformableDetrDecoderLayer(8, 8, 0.0, 2, 2, 2),
                                   lambda: (_normal(1, 3, 8), _normal(1, 3, 8, seed=1),
                                            np.full((1, 3, 2, 4), 0.4, np.float32), _normal(1, 5, 8, seed=2),
                                            [(2, 2), (1, 1)]), "save"),
    "PoolingMixer": (lambda: models.PoolingMixer(3), _x(1, 4, 5, 2), "save"),
    "PoolFormerBlock": (lambda: models.PoolFormerBlock(4, mlp_ratio=2, layer_scale_init=0.5), _x(1, 4, 4, 4), "save"),
    "ConvNeXtV2Block": (lambda: models.ConvNeXtV2Block(3, stochastic_depth_prob=0.1), _x(2, 4, 4, 3), "save"),
    "MobileViTBlock": (lambda: models.MobileViTBlock(3, 4, depth=1, num_heads=2, patch_size=(1, 2)),
                       _x(2, 2, 4, 3), "save"),
    "ESPCN": (lambda: models.ESPCN(2, channels=1, filters=(4, 2)), _x(1, 4, 4, 1), "save"),
    "EDSR": (lambda: models.EDSR(2, channels=3, filters=4, blocks=1, res_scale=0.1, mean=(0.4, 0.5, 0.6)),
             _x(1, 4, 4, 3), "save"),
    "EDSRResidualBlock": (lambda: models.EDSRResidualBlock(3, res_scale=0.5), _x(1, 4, 4, 3), "save"),
    "SRResNet": (lambda: models.SRResNet(2, channels=3, filters=4, blocks=1), _x(1, 4, 4, 3), "save"),
    "SRResNetBlock": (lambda: models.SRResNetBlock(3), _x(1, 4, 4, 3), "save"),
    "DnCNN": (lambda: models.DnCNN(1, depth=3, filters=4), _x(1, 5, 5, 1), "save"),
    "TransformerNet": (lambda: models.TransformerNet(3, width=4, blocks=1), _x(1, 8, 8, 3), "save"),
    "CapsNet": (lambda: models.CapsNet((10, 10, 1), num_classes=3, conv_filters=4, conv_kernel=3,
                                       primary_capsules=2, primary_dim=2, primary_kernel=3, class_dim=3,
                                       routing_iterations=2, decoder_units=(4,)), _x(2, 10, 10, 1), "save"),
    "P4CNN": (lambda: models.P4CNN(3, channels=(2, 2), kernel_size=3), _x(1, 7, 7, 1), "save"),
    "ProtoPNet": (lambda: models.ProtoPNet(nn.Conv2D(4, 3), 2, 2, 4), _x(1, 5, 5, 3), "save"),
    "CRNN": (lambda: models.CRNN(4, in_channels=1, height=8, hidden=4, channels=(4, 4), pools=((2, 2), (2, 1)),
                                 charset="abc"), _x(2, 8, 12, 1), "save"),
    "TrOCR": (lambda: models.TrOCR("abc", 4, patch=(2, 2), dim=4, encoder_layers=1, decoder_layers=1, heads=2,
                                   decoder_dim=2, max_width=8, max_length=4),
              lambda: (_normal(2, 4, 7, 1), np.array([7, 4]), _ids(2, 3, high=4)), "save"),
    "PyramidPooling": (lambda: models.PyramidPooling(4, bins=(1, 2, 3)), _x(1, 6, 6, 4), "save"),
    "SegNet": (lambda: models.SegNet(2, stages=((2,), (3, 2))), _x(1, 6, 5, 1), "save"),
    "ENet": (lambda: models.enet_small(2, (8, 8, 1), widths=(4, 8, 8)), _x(1, 8, 8, 1), "save"),
    "ENetInitialBlock": (lambda: models.ENetInitialBlock(1, 4), _x(1, 4, 4, 1), "save"),
    "ENetBottleneck": (lambda: models.ENetBottleneck(4, "asymmetric", kernel=3), _x(1, 4, 4, 4), "save"),
    "ENetDownsampling": (lambda: models.ENetDownsampling(2, 4), _x(1, 4, 4, 2), "save"),
    "ENetUpsampling": (lambda: models.ENetUpsampling(4, 2),
                       lambda: (_normal(1, 2, 2, 4), lamina.functional.max_pool2d_with_indices(
                           _normal(1, 4, 4, 2, seed=1), 2)[1]), "config"),
    "UNetPlusPlus": (lambda: models.UNetPlusPlus(2, depth=2, base_filters=2, level=2, mode="fast"), _x(1, 8, 8, 1),
                     "save"),
    "SegmentationModel": (lambda: models.SegmentationModel(nn.Sequential(nn.Conv2D(4, 3, stride=2, padding="same")),
                                                           nn.Sequential(nn.Conv2D(2, 1))), _x(1, 6, 6, 3), "save"),
    # PointRend (pointrend): a point head on a coarse network, refined by subdivision when evaluated
    "PointHead": (lambda: models.PointHead(2, fc_dim=4, num_fc=2), lambda: (_normal(2, 5, 3), _normal(2, 5, 2, seed=1)),
                  "save"),
    "PointRendSemSeg": (lambda: models.PointRendSemSeg(nn.Sequential(nn.Conv2D(3, 3, padding=1)),
                                                       nn.Sequential(nn.Conv2D(2, 3, stride=2, padding=1)),
                                                       models.PointHead(2, fc_dim=4, num_fc=1), num_points=8,
                                                       subdivision_steps=1, subdivision_num_points=5),
                        _x(1, 6, 6, 1), "save"),
    "SlotAttentionAutoEncoder": (lambda: models.SlotAttentionAutoEncoder((8, 8), num_slots=2, channels=4, iters=1,
                                                                         hidden_dim=4, encoder_layers=1,
                                                                         decoder_layers=1, kernel_size=3),
                                 _x(1, 8, 8, 3), "config", {"seed": 3}),
    "SoftPositionEmbed": (lambda: models.SoftPositionEmbed(3), _x(1, 4, 5, 3), "save"),
    "SuperGlue": (lambda: models.SuperGlue(4, (4,), num_layers=1, num_heads=2, sinkhorn_iterations=3),
                  lambda: models.synthetic_matching_pairs(2, 5, 4, seed=0).inputs(), "save", {"image_size": (8, 8)}),
    "RAFT": (_tiny_raft, lambda: (_normal(1, 16, 16, 3), _normal(1, 16, 16, 3, seed=1)), "config",
             {"num_flow_updates": 1}),
    "FeatureEncoder": (lambda: models.FeatureEncoder("bottleneck", (4, 4, 4, 4, 6), norm="instance"),
                       _x(1, 16, 16, 3), "save"),
    "FlowHead": (lambda: models.FlowHead(3, 4), _x(1, 4, 4, 3), "save"),
    "MaskPredictor": (lambda: models.MaskPredictor(3, 4), _x(1, 4, 4, 3), "save"),
    "CorrBlock": (lambda: models.CorrBlock(2, 1), lambda: (_normal(1, 4, 4, 3), _normal(1, 4, 4, 3, seed=1),
                                                          1.0 + _normal(1, 4, 4, 2, seed=2)), "config"),
    "MotionEncoder": (lambda: models.MotionEncoder(3, (4,), (4, 4), 6),
                      lambda: (_normal(1, 4, 4, 2), _normal(1, 4, 4, 3, seed=1)), "config"),
    "UpdateBlock": (lambda: models.UpdateBlock(models.MotionEncoder(3, (4,), (4, 4), 6), models.RecurrentBlock(8, 4),
                                               models.FlowHead(4, 4)),
                    lambda: tuple(_normal(1, 4, 4, c, seed=c) for c in (4, 2, 3, 2)), "config"),
    "ConvGRU": (lambda: models.ConvGRU(3, 2, 3, 1), lambda: (_normal(1, 4, 4, 2), _normal(1, 4, 4, 3)), "config"),
    "RecurrentBlock": (lambda: models.RecurrentBlock(3, 2), lambda: (_normal(1, 4, 4, 2), _normal(1, 4, 4, 3)),
                       "config"),
    # speech
    "TDNNBlock": (lambda: models.TDNNBlock(4, kernel_size=3, dilation=2), _x(2, 9, 3), "save"),
    "StatisticsPooling": (lambda: models.StatisticsPooling(eps=1e-6), _x(2, 5, 3), "save"),
    "AttentiveStatisticsPooling": (lambda: models.AttentiveStatisticsPooling(4, attention_channels=3),
                                   _x(2, 5, 4), "save"),
    "XVector": (lambda: models.XVector(tdnn_channels=4, stats_channels=6, embedding_dim=3), _x(2, 20, 3), "save"),
    "ECAPA_TDNN": (lambda: models.ECAPA_TDNN(channels=8, embedding_dim=3, mfa_channels=6, res2net_scale=2,
                                             se_channels=2, attention_channels=3), _x(2, 12, 3), "save"),
    "Res2NetBlock1D": (lambda: models.Res2NetBlock1D(4, scale=2), _x(2, 6, 4), "save"),
    "SEBlock1D": (lambda: models.SEBlock1D(4, se_channels=2), _x(2, 6, 4), "save"),
    "SERes2NetBlock": (lambda: models.SERes2NetBlock(4, res2net_scale=2, se_channels=2), _x(2, 6, 4), "save"),
    "Wav2Vec2Model": (_wav2vec2_model, _x(1, 20), "save"),
    # QuartzNet and Jasper (quartznet)
    "TCSConv1D": (lambda: models.TCSConv1D(3, 4, 3, stride=2), _x(2, 7, 3), "save"),
    "QuartzNetBlock": (lambda: models.QuartzNetBlock(3, 4, 3, repeat=2, dilation=2), _x(2, 7, 3), "save"),
    "QuartzNet": (lambda: models.QuartzNet(3, 4, prologue=(4, 3, 2), blocks=((4, 3), (5, 3)), repeat=2,
                                           epilogue=((4, 3, 2),), dense_residual=True), _x(2, 9, 3), "save"),
    "HuBERTModel": (lambda: models.HuBERTModel(num_clusters=3, final_dim=2, hidden_size=4, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=6, conv_dim=(4, 4),
                                               conv_kernel=(4, 2), conv_stride=(2, 2), num_conv_pos_embeddings=2,
                                               num_conv_pos_embedding_groups=2), _x(1, 20), "save",
                    {"mask_time_indices": np.array([[0, 1, 1, 0]], dtype=bool)}),
    # sequences and tokens
    "BertEmbeddings": (lambda: models.BertEmbeddings(7, 4, 6, 2, 0.0, 1e-6), lambda: (_ids(2, 5),), "save"),
    "ELECTRA": (lambda: models.ELECTRA(7, embedding_size=4, hidden_size=6, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=5, generator_hidden_size=2, generator_num_hidden_layers=1,
                                       generator_intermediate_size=3, max_position_embeddings=6),
                lambda: (_ids(2, 5),), "save"),
    "AlbertLayer": (lambda: models.AlbertLayer(4, 2, 6), _x(2, 5, 4), "save"),
    "AlbertModel": (lambda: models.AlbertModel(7, embedding_size=3, hidden_size=4, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=6, share="ffn",
                                               max_position_embeddings=6), lambda: (_ids(2, 5),), "save"),
    "AlbertForMaskedLM": (lambda: models.AlbertForMaskedLM(vocab_size=7, embedding_size=3, hidden_size=4,
                                                           num_hidden_layers=2, num_attention_heads=2,
                                                           intermediate_size=6, max_position_embeddings=6),
                          lambda: (_ids(2, 5),), "save"),
    "AlbertForPreTraining": (lambda: models.AlbertForPreTraining(vocab_size=7, embedding_size=3, hidden_size=4,
                                                                 num_hidden_layers=2, num_attention_heads=2,
                                                                 intermediate_size=6, max_position_embeddings=6,
                                                                 share="none"), lambda: (_ids(2, 5),), "save"),
    # BART (bart)
    "BartAttention": (lambda: models.BartAttention(4, 2), _x(2, 5, 4), "save"),
    "BartEncoderLayer": (lambda: models.BartEncoderLayer(4, 2, 6), _x(2, 5, 4), "save"),
    "BartDecoderLayer": (lambda: models.BartDecoderLayer(4, 2, 6),
                         lambda: (_normal(2, 5, 4), _normal(2, 3, 4, seed=1)), "save"),
    "BartEncoder": (lambda: models.BartEncoder(4, 2, 2, 6, max_position_embeddings=8), _x(2, 5, 4), "save"),
    "BartDecoder": (lambda: models.BartDecoder(4, 1, 2, 6, max_position_embeddings=8),
                    lambda: (_normal(2, 5, 4), _normal(2, 3, 4, seed=1)), "save"),
    "BartModel": (lambda: models.BartModel(**_TINY_BART), lambda: (_ids(2, 5, high=7),), "save"),
    "BartForConditionalGeneration": (lambda: models.BartForConditionalGeneration(**_TINY_BART),
                                     lambda: (_ids(2, 5, high=7),), "save"),
    "DebertaLayer": (lambda: models.DebertaLayer(4, 2, 6, 2), lambda: (_normal(2, 5, 4), _normal(4, 4, seed=1)),
                     "config"),
    "DebertaEncoder": (lambda: models.DebertaEncoder(7, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=6, max_relative_positions=2),
                       lambda: (_ids(2, 5),), "save"),
    "DebertaForMaskedLM": (lambda: models.DebertaForMaskedLM(7, max_position_embeddings=6, hidden_size=4,
                                                             num_hidden_layers=2, num_attention_heads=2,
                                                             intermediate_size=6, max_relative_positions=2),
                           lambda: (_ids(2, 5),), "save"),
    "BiLSTMCRF": (lambda: models.BiLSTMCRF(7, 3, embed_dim=4, hidden=4, padding_idx=0), lambda: (_ids(2, 5),),
                  "save"),
    "CPC": (lambda: models.CPC(encoder=((3, 4, 2), (3, 3, 2)), context_dim=4, prediction_steps=2, num_negatives=3,
                               negative_source="batch", seed=1), _x(2, 30), "save"),
    "MaskGIT": (lambda: models.MaskGIT(6, 4, d_model=4, num_heads=2, num_layers=1), lambda: (_ids(2, 4),), "save"),
    "MultiStreamLM": (lambda: models.MultiStreamLM(2, 4, d_model=4, num_heads=2, num_layers=1, max_len=6,
                                                   num_classes=2), lambda: (_ids(2, 2, 5), np.array([1, 2])), "save"),
    "DiscreteDiffusionLM": (lambda: models.DiscreteDiffusionLM(5, 4, dim=4, depth=1, heads=2, time_conditioning=True),
                            lambda: (_ids(2, 4), np.array([0.2, 0.7])), "save"),
    "MedusaHeads": (lambda: models.MedusaHeads(4, 5, 2, num_layers=2), _x(2, 3, 4), "save"),
    # multi-token prediction (multi_token): token ids around a tiny GPT-2
    "MultiTokenHeads": (lambda: models.MultiTokenHeads(models.GPT2(7, 16, 4, 1, 2), 3, dim_feedforward=6),
                        lambda: (_ids(2, 5, high=7),), "save"),
    "MTPModules": (lambda: models.MTPModules(models.GPT2(7, 16, 4, 1, 2), depth=2, dim_feedforward=6),
                   lambda: (_ids(2, 5, high=7),), "save"),
    "Perceiver": (lambda: models.Perceiver(3, num_latents=2, latent_dim=4, latent_blocks=1, latent_heads=2,
                                           latent_widening=1), _x(2, 5, 3), "save"),
    "PerceiverIO": (lambda: models.PerceiverIO(2, num_outputs=3, num_latents=2, latent_dim=4, latent_blocks=1,
                                               latent_heads=2, latent_widening=1), _x(2, 5, 3), "save"),
    "PerceiverEncoder": (lambda: models.PerceiverEncoder(num_latents=2, latent_dim=4, num_repeats=2,
                                                         latent_blocks=1, latent_heads=2, latent_widening=1,
                                                         share_weights=False), _x(2, 5, 3), "save"),
    "PerceiverBlock": (lambda: models.PerceiverBlock(4, num_heads=2, widening_factor=2), _x(2, 5, 4), "save"),
    # Flamingo: a frozen vision encoder and decoder LM joined by a resampler and gated cross-attention
    "PerceiverResampler": (lambda: models.PerceiverResampler(4, depth=1, num_latents=2, num_heads=2, max_frames=2),
                           _x(1, 2, 2, 3, 4), "save"),
    "GatedCrossAttentionBlock": (lambda: models.GatedCrossAttentionBlock(4, num_heads=2, ff_mult=1, media_dim=3),
                                 lambda: (_normal(1, 4, 4), _normal(1, 2, 2, 3, seed=1),
                                          np.array([[0, 1, 0, 1]], dtype=bool)), "save"),
    "Flamingo": (lambda: models.Flamingo(nn.Conv2D(4, 2, stride=2), models.Llama(
        vocab_size=5, hidden_size=4, intermediate_size=6, num_hidden_layers=2, num_attention_heads=2), vision_dim=4,
        media_token_id=0, cross_attn_every=2, num_latents=2, resampler_depth=1, ff_mult=1),
                 lambda: (np.array([[3, 0, 2, 4]]), _normal(1, 1, 4, 4, 3)), "config"),
    # LLaVA: projected patch features of a vision encoder spliced into a decoder LM's inputs
    "LLaVA": (lambda: models.LLaVA(models.vit(4, 2, num_classes=2, d_model=4, depth=2, num_heads=2, mlp_dim=4),
                                   models.Llama(vocab_size=5, hidden_size=4, intermediate_size=6, num_hidden_layers=1,
                                                num_attention_heads=2), image_token_id=1),
              lambda: (np.array([[1, 2, 1, 4]]), _normal(2, 4, 4, 3)), "save"),
    # neural processes
    "ConditionalNeuralProcess": (lambda: models.ConditionalNeuralProcess(1, encoder_sizes=(4, 4), decoder_sizes=(4,)),
                                 lambda: (_normal(2, 5, 1), _normal(2, 5, 1, seed=1), _normal(2, 3, 1, seed=2)),
                                 "config"),
    "NeuralProcess": (lambda: models.NeuralProcess(1, encoder_sizes=(4, 4), latent_dim=3, decoder_sizes=(4,),
                                                   deterministic_path=True),
                      lambda: (_normal(2, 5, 1), _normal(2, 5, 1, seed=1), _normal(2, 3, 1, seed=2)), "config",
                      {"latent_noise": _normal(2, 3, seed=3)}),
    "AttentiveNeuralProcess": (lambda: models.AttentiveNeuralProcess(1, encoder_sizes=(4, 4), latent_dim=4,
                                                                     decoder_sizes=(4,), num_heads=2,
                                                                     self_attention_layers=1, attention_sizes=(4,)),
                               lambda: (_normal(2, 5, 1), _normal(2, 5, 1, seed=1), _normal(2, 3, 1, seed=2)),
                               "config", {"latent_noise": _normal(2, 4, seed=3)}),
    "MultiheadCrossAttention": (lambda: models.MultiheadCrossAttention(4, num_heads=2, key_sizes=(4,)),
                                lambda: (_normal(2, 3, 1), _normal(2, 5, 1, seed=1), _normal(2, 5, 4, seed=2)),
                                "config"),
    # causal inference, physics, dynamics, energy models
    "TARNet": (lambda: models.TARNet((4,), (3,), alpha=0.5), _x(4, 3), "save"),
    "CFRNet": (lambda: models.CFRNet((4,), (3,), ipm="wasserstein", reweight=True), _x(4, 3), "save"),
    "DragonNet": (lambda: models.DragonNet((4,), (3,), beta=0.5), _x(4, 3), "save"),
    "DeepONet": (lambda: models.DeepONet(5, coordinate_dim=2, latent_dim=3, branch_hidden=(4,), trunk_hidden=(4,)),
                 lambda: (_normal(2, 5), _normal(2, 2, seed=1)), "config"),
    "HamiltonianNN": (lambda: models.HamiltonianNN(2, hidden=(4,)), _x(3, 4), "save"),
    "LagrangianNN": (lambda: models.LagrangianNN(2, hidden=(4,)), _x(3, 4), "save"),
    "KoopmanAutoencoder": (lambda: models.KoopmanAutoencoder(3, 2, hidden=(4,)), _x(2, 3), "save"),
    "CNFDynamics": (lambda: models.CNFDynamics(2, hidden=(4,)), lambda: (0.5, _normal(3, 2)), "config"),
    "CNF": (lambda: models.CNF(models.CNFDynamics(2, hidden=(4,)), method="rk4", options={"step_size": 0.5}),
            _x(3, 2), "save"),
    "ContractiveCell": (lambda: models.ContractiveCell(3, contraction=0.5),
                        lambda: (_normal(2, 3), _normal(2, 3, seed=1)), "config"),
    "ContractiveConvCell": (lambda: models.ContractiveConvCell(2, contraction=0.5),
                            lambda: (_normal(1, 4, 4, 2), _normal(1, 4, 4, 2, seed=1)), "config"),
    "DEQMLP": (lambda: models.DEQMLP(hidden=4, num_classes=2, max_iter=8), _x(2, 3), "save"),
    "DEQConvNet": (lambda: models.DEQConvNet(channels=2, num_classes=2, max_iter=5, global_pool=True),
                   _x(1, 4, 4, 1), "save"),
    "RBM": (lambda: models.RBM(4, 3, visible="gaussian", seed=1, dtype="float32"), _x(2, 4), "save"),
    "NCSNMLP": (lambda: models.NCSNMLP(2, hidden=4, depth=1, levels=3),
                lambda: (_normal(3, 2), np.array([0.5, 0.1, 1.0], np.float32)), "config"),
    "ScoreSDEMLP": (lambda: models.ScoreSDEMLP(2, hidden=(4,), time_dim=4, sde="ve", sigma_max=5.0),
                    lambda: (_normal(3, 2), np.array([0.5, 0.1, 1.0])), "save"),
    "EDMPrecond": (lambda: models.EDMPrecond(models.DenoisingMLP(hidden=(4,), time_dim=4), sigma_data=0.4),
                   lambda: (_normal(3, 2), np.array([0.5, 1.0, 2.0], np.float32)), "config"),
    "ConsistencyModel": (lambda: models.ConsistencyModel(models.DenoisingMLP(hidden=(4,), time_dim=4), T=10.0),
                         lambda: (_normal(3, 2), np.array([0.5, 1.0, 2.0], np.float32)), "config"),
    # guidance distillation: a denoiser and a diffusion model taking the guidance scale
    "GuidanceDenoisingMLP": (lambda: models.GuidanceDenoisingMLP(hidden=(4,), time_dim=4, num_classes=2),
                             lambda: (_normal(3, 2), np.array([1, 5, 9]), np.array([0, 2, 1])), "save",
                             {"guidance": np.array([1.0, 2.5, 4.0])}),
    "GuidanceDenoisingUNet": (lambda: models.GuidanceDenoisingUNet(2, (1, 2), groups=2, num_classes=2),
                              lambda: (_normal(2, 4, 4, 1), np.array([3, 7]), np.array([0, 1])), "save",
                              {"guidance": np.array([1.5, 3.0])}),
    "GuidanceDistilledDiffusion": (lambda: models.GuidanceDistilledDiffusion(
        models.GuidanceDenoisingMLP(hidden=(4,), time_dim=4, num_classes=2), schedule="cosine", num_timesteps=10),
        lambda: (_normal(3, 2), np.array([1, 5, 9]), np.array([0, 2, 1])), "save",
        {"guidance": np.array([1.0, 2.5, 4.0])}),
    # latent diffusion: the KL autoencoder, its parts, and the diffusion model over its latents
    "KLResidualBlock": (lambda: models.KLResidualBlock(4, groups=2), _x(1, 4, 4, 2), "save"),
    "KLEncoder": (lambda: models.KLEncoder(4, channels=(2, 4), groups=2), _x(1, 4, 4, 1), "save"),
    "KLDecoder": (lambda: models.KLDecoder(1, channels=(2, 4), groups=2), _x(1, 2, 2, 2), "save"),
    "AutoencoderKL": (lambda: models.AutoencoderKL(1, 2, channels=(2, 4), groups=2, scaling_factor=0.5),
                      _x(1, 4, 4, 1), "save"),
    "LatentDiffusion": (lambda: models.LatentDiffusion(
        models.AutoencoderKL(1, 2, channels=(2, 4), groups=2),
        models.DiffusionModel(models.DenoisingUNet(2, (1,), groups=2), schedule="cosine", num_timesteps=10)),
        lambda: (_normal(2, 2, 2, 2), np.array([3, 7])), "save"),
    "SpatialCrossTransformer": (lambda: models.SpatialCrossTransformer(4, 3, num_heads=2, groups=2),
                                lambda: (_normal(2, 2, 2, 4), _normal(2, 5, 3, seed=1)), "config"),
    "CrossAttentionUNet": (lambda: models.CrossAttentionUNet(2, (1, 2), groups=2, context_dim=3,
                                                             attention_levels=(1,)),
                           lambda: (_normal(2, 4, 4, 1), np.array([3, 7])), "save",
                           {"context": _normal(2, 5, 3, seed=1)}),
    "DiT": (lambda: models.DiT(4, 2, 1, dim=8, depth=1, num_heads=2, num_classes=2, learn_sigma=True, time_dim=4),
            lambda: (_normal(2, 4, 4, 1), np.array([3, 7]), np.array([0, 2])), "save"),
    "DiTBlock": (lambda: models.DiTBlock(8, 2, mlp_ratio=2.0), lambda: (_normal(2, 3, 8), _normal(2, 5, seed=1)),
                 "config"),
    "ControlNet": (lambda: models.ControlNet(models.DenoisingUNet(2, (1, 2), groups=2), 1, conditioning_filters=(2,)),
                   lambda: (_normal(2, 4, 4, 1), np.array([3, 7]), _normal(2, 4, 4, 1, seed=1)), "save"),
    "ControlledDenoiser": (_controlled_unet, lambda: (_normal(2, 4, 4, 1), np.array([3, 7]), np.array([0, 2])), "save",
                           {"control": _normal(2, 4, 4, 1, seed=1)}),
    "DiTControlNet": (lambda: models.DiTControlNet(_tiny_dit(), 1, num_control_blocks=2),
                      lambda: (_normal(2, 4, 4, 1), np.array([3, 7]), _normal(2, 4, 4, 1, seed=1)), "save"),
    "ControlledDenoiser (DiT)": (_controlled_dit, lambda: (_normal(2, 4, 4, 1), np.array([3, 7]), np.array([0, 2])),
                                 "save", {"control": _normal(2, 4, 4, 2, seed=1)}),
    # wrappers of registered sub-models, heads
    "ConceptBottleneck": (lambda: models.ConceptBottleneck(nn.Dense(3), nn.Dense(2), 3), _x(2, 4), "save"),
    "EarlyExitNetwork": (lambda: models.EarlyExitNetwork([nn.Dense(4, activation="relu"), nn.Dense(4)],
                                                         [nn.Dense(2), nn.Dense(2)], loss_weights=(0.3, 0.7)),
                         _x(2, 3), "save"),
    "SwAVPrototypes": (lambda: models.SwAVPrototypes(5, name="protos"), _x(2, 3), "save"),
    # differentiable trees for tabular data
    "SoftDecisionTree": (lambda: models.SoftDecisionTree(2, 3, 4, inverse_temperature=2.0), _x(5, 4), "save"),
    "NeuralDecisionForest": (lambda: models.NeuralDecisionForest(2, 2, 4, 3), _x(5, 4), "save"),
    "ObliviousDecisionTrees": (lambda: models.ObliviousDecisionTrees(4, 3, depth=2, tree_dim=2), _x(6, 4), "save"),
    "NODE": (lambda: models.NODE(2, 3, 2, 2, 4, output_dim=1), _x(6, 4), "save"),
    "TabTransformer": (lambda: models.TabTransformer(2, (3, 4), d_out=2, d_token=8, n_blocks=1, attention_heads=2,
                                                     continuous_normalization="batch", mlp_hidden=(5,)),
                       lambda: (_normal(3, 2), _ids(3, 2, high=3)), "save"),
    "SAINT": (lambda: models.SAINT(2, (3, 4), d_out=2, d_token=4, n_blocks=1, attention_heads=2, intersample_heads=2,
                                   num_hidden=3, head_hidden=5), lambda: (_normal(3, 2), _ids(3, 2, high=3)), "save"),
    "IntersampleAttention": (lambda: models.IntersampleAttention(6, heads=2), _x(3, 3, 2), "save"),
    # neural cellular automata (every cell fires, so that a step is deterministic)
    "NeuralCA": (lambda: models.NeuralCA(4, hidden=3, fire_rate=1.0), _x(1, 5, 5, 4), "save"),
    "SelfClassifyingCA": (lambda: models.SelfClassifyingCA(2, hidden_channels=1, hidden=3, fire_rate=1.0),
                          _x(1, 5, 5, 4), "save"),
    # joint-embedding predictive architecture (I-JEPA): the loss for fixed masks, and its parts
    "IJEPA": (lambda: models.IJEPA(img_size=4, patch_size=2, in_chans=1, embed_dim=4, depth=1, num_heads=1,
                                   predictor_embed_dim=4, predictor_depth=1, loss="l1"), _x(2, 4, 4, 1), "save",
              {"masks": models.multiblock_masks(2, 2, num_targets=1, target_scale=(0.2, 0.3), min_keep=1, rng=0)}),
    "IJEPAEncoder": (lambda: models.IJEPAEncoder(4, 2, 1, embed_dim=4, depth=1, num_heads=1), _x(2, 4, 4, 1),
                     "save"),
    # DINOv2 / iBOT: the backbone whose masked patches take the mask token
    "MaskedViTEncoder": (lambda: models.MaskedViTEncoder(2, d_model=4, depth=1, num_heads=2, mlp_dim=8),
                         _x(2, 4, 4, 1), "save", {"masks": np.array([[True, False, False, True], [False] * 4])}),
    "IJEPAPredictor": (lambda: models.IJEPAPredictor(2, embed_dim=4, predictor_embed_dim=4, depth=1, num_heads=1),
                       _x(2, 3, 4), "config", {"context_indices": np.array([[0, 1, 2], [1, 2, 3]]),
                                               "target_indices": np.array([[[3], [0]]])}),
    # video transformers
    "TimeSformer": (lambda: models.TimeSformer(2, 4, 2, 1, dim=4, depth=1, heads=2, num_classes=2),
                    _x(1, 2, 4, 4, 1), "save"),
    "TimeSformerBlock": (lambda: models.TimeSformerBlock(4, 2, 2, mlp_ratio=2.0), _x(2, 9, 4), "save"),
    "VideoMAE": (lambda: models.VideoMAE(2, 4, 2, 2, 1, dim=4, depth=1, heads=2, decoder_dim=4, decoder_depth=1,
                                         decoder_heads=1, mask_ratio=0.5), _x(2, 2, 4, 4, 1), "save",
                 {"mask": np.array([[1, 0, 1, 0], [0, 1, 1, 0]], bool)}),
    "VideoMAEClassifier": (lambda: models.VideoMAEClassifier(2, 4, 2, 2, 1, dim=4, depth=1, heads=2, num_classes=2),
                           _x(1, 2, 4, 4, 1), "save"),
    # neural audio codec (residual vector quantisation)
    "AudioCodec": (lambda: models.AudioCodec(channels=2, strides=(2, 3), dim=3, num_quantizers=2, codebook_size=4,
                                             seed=0), _x(2, 12, 1), "save"),
    # 2-D Gaussian splatting: an image as Gaussians (no inputs: calling it draws the image)
    "GaussianImage": (lambda: models.GaussianImage(5, 4, 6, channels=2, mode="alpha", seed=0), lambda: (), "save"),
    # long-horizon forecasters (Informer with every query active: ProbSparse samples keys at random)
    "Autoformer": (lambda: models.Autoformer(12, 4, channels=2, d_model=4, encoder_layers=1, dim_feedforward=4,
                                             moving_average=5), _x(2, 12, 2), "save"),
    "Informer": (lambda: models.Informer(8, 3, channels=2, d_model=4, num_heads=2, dim_feedforward=4, factor=10.0),
                 _x(2, 8, 2), "save"),
    "NHiTS": (lambda: models.NHiTS(12, 4, channels=2, pool_kernel_sizes=(4, 1), downsample_factors=(2, 1), units=4),
              _x(2, 12, 2), "save"),
    "TSMixer": (lambda: models.TSMixer(12, 4, channels=2, blocks=1, ff_dim=3), _x(2, 12, 2), "save"),
    "TimesNet": (lambda: models.TimesNet(8, 3, channels=2, d_model=4, d_ff=3, blocks=1, top_k=2, num_kernels=2),
                 _x(2, 8, 2), "save"),
    "TimesBlock": (lambda: models.TimesBlock(8, 3, 4, top_k=2, num_kernels=2), _x(2, 8, 3), "save"),
    "InceptionBlock2D": (lambda: models.InceptionBlock2D(2, 3, num_kernels=2), _x(2, 3, 4, 2), "save"),
    "ITransformer": (lambda: models.ITransformer(8, 3, channels=2, d_model=4, num_heads=2, dim_feedforward=4,
                                                 layers=1), _x(2, 8, 2), "save"),
    # forecasting: the Temporal Fusion Transformer and its blocks
    "TemporalFusionTransformer": (lambda: models.TemporalFusionTransformer(2, 3, 2, hidden=4, num_heads=2, horizon=3),
                                  lambda: (_normal(2, 2), _normal(2, 5, 3, seed=1), _normal(2, 3, 2, seed=2)),
                                  "save"),
    "GatedResidualNetwork": (lambda: models.GatedResidualNetwork(3, 4, 5, context_size=2),
                             lambda: (_normal(2, 4, 3), _normal(2, 2, seed=1)), "save"),
    "VariableSelectionNetwork": (lambda: models.VariableSelectionNetwork(3, 4, 5, context_size=2),
                                 lambda: (_normal(2, 4, 3, 4), _normal(2, 2, seed=1)), "save"),
    "InterpretableMultiHeadAttention": (lambda: models.InterpretableMultiHeadAttention(4, 2),
                                        lambda: (_normal(2, 3, 4), _normal(2, 5, 4, seed=1), _normal(2, 5, 4, seed=2)),
                                        "save"),
    "StaticCovariateEncoder": (lambda: models.StaticCovariateEncoder(4), _x(2, 4), "save"),
    "ChronosModel": (lambda: models.ChronosModel(8, context_length=4, prediction_length=2, d_model=4, d_kv=2, d_ff=4,
                                                 num_layers=1, num_heads=2),
                     lambda: (_ids(2, 5, high=8), _ids(2, 3, high=8, seed=1)), "save"),
    "ChronosGPT2Model": (lambda: models.ChronosGPT2Model(8, context_length=4, prediction_length=2, n_embd=4, n_layer=1,
                                                         n_head=2), lambda: (_ids(2, 5, high=8),), "save"),
    # DeepAR (forecasting.deepar): a (batch, context + horizon) target window
    "DeepAR": (lambda: models.DeepAR(4, 2, likelihood="student_t", hidden=3, layers=2, lags=(1, 2)), _x(2, 6),
               "save"),
    # promptable segmentation (Segment Anything) and its parts
    "SegmentAnything": (lambda: models.tiny_sam(8, embed_dim=8, depth=1, num_heads=2, mlp_dim=4, encoder_widths=(4,),
                                                iou_head_hidden_dim=4), _x(1, 8, 8, 3), "save",
                        {"points": np.array([[[2.0, 3.0]]]), "labels": np.array([[1]])}),
    "SAMPromptEncoder": (lambda: models.SAMPromptEncoder(4, 2, 8, mask_in_chans=4),
                         lambda: (_normal(1, 2, 2), np.array([[1, 0]]), _normal(1, 4, seed=1),
                                  _normal(1, 8, 8, 1, seed=2)), "config"),
    "SAMAttention": (lambda: models.SAMAttention(4, 2, downsample_rate=2),
                     lambda: (_normal(1, 2, 4), _normal(1, 3, 4, seed=1), _normal(1, 3, 4, seed=2)), "config"),
    "TwoWayAttentionBlock": (lambda: models.TwoWayAttentionBlock(4, 2, 6),
                             lambda: tuple(_normal(1, t, 4, seed=t) for t in (2, 3, 2, 3)), "config"),
    "TwoWayTransformer": (lambda: models.TwoWayTransformer(1, 4, 2, 6),
                          lambda: (_normal(1, 2, 2, 4), _normal(1, 2, 2, 4, seed=1), _normal(1, 3, 4, seed=2)),
                          "config"),
    "SAMMaskDecoder": (lambda: models.SAMMaskDecoder(8, models.TwoWayTransformer(1, 8, 2, 4), num_multimask_outputs=2,
                                                     iou_head_depth=2, iou_head_hidden_dim=4),
                       lambda: (_normal(1, 2, 2, 8), _normal(1, 2, 2, 8, seed=1), _normal(1, 2, 8, seed=2),
                                _normal(1, 2, 2, 8, seed=3)), "config"),
    # text to speech: FastSpeech 2 and its blocks (token ids, durations and masks as inputs)
    "FastSpeech2": (lambda: models.FastSpeech2(6, n_mels=3, hidden=4, num_heads=2, encoder_layers=1, decoder_layers=1,
                                               filter_size=6, kernel_sizes=(3, 1), predictor_filter_size=4, n_bins=4,
                                               postnet_layers=2, postnet_channels=4),
                    lambda: (np.array([[1, 2, 3], [4, 5, 0]]),), "save"),
    "FFTBlock": (lambda: models.FFTBlock(4, 2, 6, kernel_sizes=(3, 1)),
                 lambda: (_normal(2, 3, 4), np.array([[True, True, True], [True, False, False]])), "config"),
    "VariancePredictor": (lambda: models.VariancePredictor(4), lambda: (_normal(2, 3, 4), np.ones((2, 3), bool)),
                          "config"),
    "VarianceAdaptor": (lambda: models.VarianceAdaptor(4, filter_size=4, n_bins=4),
                        lambda: (_normal(2, 3, 4), np.array([[True, True, True], [True, True, False]])), "config"),
    "LengthRegulator": (models.LengthRegulator, lambda: (_normal(2, 3, 4), np.array([[1, 2, 0], [3, 1, 1]])),
                        "config"),
    "PostNet": (lambda: models.PostNet(3, channels=4, layers=2), _x(2, 5, 3), "save"),
    # Tacotron 2 and its location-sensitive attention (pre-net dropout off: it stays on in evaluation)
    "LocationSensitiveAttention": (lambda: models.LocationSensitiveAttention(4, location_filters=2, location_kernel=3),
                                   lambda: (_normal(2, 3), _normal(2, 5, 4, seed=1), _normal(2, 5, seed=2)), "save"),
    "Tacotron2": (lambda: models.Tacotron2(6, n_mels=3, embed_dim=4, encoder_kernel_size=3, prenet_units=4,
                                           prenet_dropout=0.0, attention_rnn_units=5, decoder_units=4, attention_dim=3,
                                           location_filters=2, location_kernel=3, frames_per_step=2,
                                           postnet_channels=4, postnet_layers=2),
                  lambda: (np.array([[1, 2, 3], [4, 5, 0]]), _normal(2, 4, 3, seed=1)), "config"),
    # Mamba-2 (state-space duality)
    "Mamba2LM": (lambda: models.Mamba2LM(5, 4, n_layer=1, d_state=3, headdim=4, chunk_size=2),
                 lambda: (_ids(2, 5),), "save"),
    # DeltaNet, Gated DeltaNet and GLA decoders (fast_weight_lm)
    "FastWeightLM": (lambda: models.FastWeightLM(5, 4, num_layers=1, mixer="gated_deltanet", ffn_dim=6, chunk_size=2,
                                                 conv_size=2), lambda: (_ids(2, 5),), "save"),
    # learned perceptual image similarity: a frozen backbone and non-negative lin weights
    "LPIPS": (lambda: models.LPIPS(nn.Sequential(nn.Conv2D(3, 3, name="0"), nn.ReLU(name="1")), layers=("1",),
                                   channels=(3,)), lambda: (_normal(2, 4, 4, 3), _normal(2, 4, 4, 3, seed=1)), "save"),
    # SigLIP: CLIP's towers with the sigmoid loss and a learnable bias
    "SigLIP": (lambda: models.siglip("tiny"), lambda: (_normal(2, 16, 16, 3), _ids(2, 4, high=300)), "save"),
    # CLAP: CLIP's text tower and loss with a log-mel front end and a CNN14-style audio tower
    "CLAP": (lambda: models.clap(front_end={"sample_rate": 8000, "n_fft": 64, "hop_length": 32, "n_mels": 16}),
             lambda: (_normal(2, 512), _ids(2, 4, high=300)), "save"),
    "CNN14Block": (lambda: models.CNN14Block(3), _x(2, 4, 6, 2), "save"),
    "CNN14Encoder": (lambda: models.CNN14Encoder((2, 3), embed_dim=4), _x(2, 8, 8), "save"),
    "LogMelFrontEnd": (lambda: models.LogMelFrontEnd(8000, n_fft=64, hop_length=32, n_mels=8), _x(2, 256), "save"),
    # the normalized Transformer (hidden states and weights on the unit sphere)
    "NGPT": (lambda: models.NGPT(6, 8, 2, 2, d_ff=12, alpha_mlp_init=0.1), lambda: (_ids(2, 5),), "save"),
    "NGPTBlock": (lambda: models.NGPTBlock(8, 2, d_ff=6, rope_base=100.0), _x(2, 4, 8), "save"),
    # Transformer-XL: relative attention over a memory of past segments
    "TransformerXL": (lambda: models.TransformerXL(6, d_model=4, num_heads=2, num_layers=2, d_ff=6, mem_len=2),
                      lambda: (_ids(2, 3, high=6),), "save"),
    "TransformerXLLayer": (lambda: models.TransformerXLLayer(4, 2, 6, d_head=3),
                           lambda: (_normal(2, 3, 4), _normal(2, 2, 4, seed=1)), "save"),
    "RelativeMultiHeadAttention": (lambda: models.RelativeMultiHeadAttention(4, 2),
                                   lambda: (_normal(2, 3, 4), _normal(2, 2, 4, seed=1)), "save"),
    # XLNet: two-stream relative attention for permutation language modelling
    "XLNetLM": (lambda: models.XLNetLM(6, d_model=4, num_heads=2, num_layers=2, d_ff=6, mem_len=2),
                lambda: (_ids(2, 3, high=6),), "save", {"perm_order": np.array([2, 0, 1])}),
    "XLNetLayer": (lambda: models.XLNetLayer(4, 2, 6, d_head=3),
                   lambda: (_normal(2, 3, 4), _normal(2, 3, 4, seed=1), _normal(2, 2, 4, seed=2)), "save"),
    "TwoStreamRelativeAttention": (lambda: models.TwoStreamRelativeAttention(4, 2),
                                   lambda: (_normal(2, 3, 4), _normal(2, 3, 4, seed=1), _normal(2, 2, 4, seed=2)),
                                   "save"),
    # BLIP-2's Q-Former: learned queries and text in shared layers, a frozen image encoder
    "QFormerLayer": (lambda: models.QFormerLayer(4, 2, 6, cross_attention=True),
                     lambda: (_normal(2, 5, 4), 2, _normal(2, 3, 6, seed=1)), "config"),
    "QFormer": (lambda: _tiny_qformer(), lambda: (_normal(2, 3, 6), _ids(2, 4)), "save"),
    "BLIP2Stage1": (lambda: models.BLIP2Stage1(nn.Conv2D(6, 2, stride=2), _tiny_qformer(), eos_token_id=2),
                    lambda: (_normal(2, 4, 4, 3), _ids(2, 4)), "save"),
    # click-through-rate models: field ids (and dense features), or behaviour histories (0 pads)
    "DeepFM": (lambda: models.DeepFM((5, 3), embed_dim=2, mlp_dims=(3,), num_dense=1),
               lambda: (_ids(3, 2, high=3), _normal(3, 1)), "save"),
    "DCNv2": (lambda: models.DCNv2((5, 3), embed_dim=2, num_cross_layers=1, mlp_dims=(3,), structure="parallel",
                                   low_rank=2, num_experts=2), lambda: (_ids(3, 2, high=3),), "save"),
    "DIN": (lambda: models.DIN(6, embed_dim=2, attention_mlp=(3,), mlp_dims=(3,), category_vocab=2),
            lambda: (np.array([[1, 2, 0], [3, 0, 0]]), np.array([4, 5]), np.array([[1, 0, 0], [1, 0, 0]]),
                     np.array([0, 1])), "save"),
    "Dice": (models.Dice, _x(3, 4), "config"),
    "WideAndDeep": (lambda: models.WideAndDeep((5, 3), embed_dim=2, mlp_dims=(3,), cross_fields=((0, 1),),
                                               num_dense=1), lambda: (_ids(3, 2, high=3), _normal(3, 1)), "save"),
    "InteractingLayer": (lambda: models.InteractingLayer(3, attention_dim=2, num_heads=2), _x(2, 4, 3), "save"),
    "AutoInt": (lambda: models.AutoInt((5, 3), embed_dim=2, num_layers=2, attention_dim=2, num_dense=1),
                lambda: (_ids(3, 2, high=3), _normal(3, 1)), "save"),
    "CIN": (lambda: models.CIN(3, (4, 3)), _x(2, 3, 5), "save"),
    "XDeepFM": (lambda: models.XDeepFM((5, 3), embed_dim=2, cin_layer_sizes=(2, 3), mlp_dims=(3,), num_dense=1),
                lambda: (_ids(3, 2, high=3), _normal(3, 1)), "save"),
    # multi-task recommenders (multitask_rec): {task: (B,)} from field ids and dense features
    "ExpertGroup": (lambda: models.ExpertGroup(3, 4, (5, 2)), _x(2, 4), "save"),
    "SharedBottom": (lambda: models.SharedBottom((5, 3), ("a", "b"), bottom_units=(3,), tower_units=(2,), embed_dim=2,
                                                 num_dense=1, task_types=("binary", "regression")),
                     lambda: (_ids(3, 2, high=3), _normal(3, 1)), "save"),
    "MMoE": (lambda: models.MMoE((5, 3), ("a", "b"), num_experts=2, expert_units=(3,), tower_units=(2,), embed_dim=2,
                                 num_dense=1), lambda: (_ids(3, 2, high=3), _normal(3, 1)), "save"),
    "PLE": (lambda: models.PLE((5, 3), ("a", "b"), num_levels=2, shared_experts=1, task_experts=1, expert_units=(3,),
                               tower_units=(2,), embed_dim=2, num_dense=1),
            lambda: (_ids(3, 2, high=3), _normal(3, 1)), "save"),
    # normalizer-free ResNets (nfnet) and GhostNet (ghostnet)
    "ScaledActivation": (lambda: models.ScaledActivation("gelu"), _x(2, 3), "save"),
    "NFBlock": (lambda: models.NFBlock(3, 4, stride=2, alpha=0.3, beta=1.2, activation="silu", skipinit=True),
                _x(1, 4, 4, 3), "save"),
    "NFResNet": (lambda: models.NFResNet((1, 1), (4, 6), num_classes=2, stem_channels=4, stem_kernel=3,
                                         stem_stride=1, stem_pool=True, skipinit=True), _x(1, 8, 8, 3), "save"),
    # NFNet-F (nfnet_f): normalizer-free bottlenecks
    "NFBottleneck": (lambda: models.NFBottleneck(3, 4, stride=2, beta=1.2, group_size=1, drop_path=0.1),
                     _x(1, 4, 4, 3), "save"),
    "NFNet": (lambda: models.NFNet((1, 1), (4, 8), num_classes=2, stem_widths=(2, 2, 4, 4), group_size=2),
              _x(1, 8, 8, 3), "save"),
    "GhostModule": (lambda: models.GhostModule(3, 5, ratio=3, dw_size=3), _x(1, 4, 4, 3), "save"),
    "GhostBottleneck": (lambda: models.GhostBottleneck(3, 8, 4, dw_kernel_size=5, stride=2, se_ratio=0.25),
                        _x(1, 6, 6, 3), "save"),
    "GhostNet": (lambda: models.GhostNet(2, width=0.25, dropout=0.1, config=(((3, 8, 8, 0.25, 2),),)),
                 _x(1, 8, 8, 3), "save"),
    # attention over convolution branches: SKNet and ResNeSt (resnest)
    "SKConv": (lambda: models.SKConv(4, stride=2, branches=3, groups=2, reduction=2, min_dim=3), _x(2, 5, 5, 4),
               "save"),
    "SplitAttention": (lambda: models.SplitAttention(6, groups=2, radix=3, reduction=3, min_inter=2),
                       _x(2, 4, 4, 6), "save"),
    "SKBlock": (lambda: models.SKBlock(3, 2, stride=2, groups=2, base_width=64, min_dim=2), _x(2, 4, 4, 3), "save"),
    "ResNeStBottleneck": (lambda: models.ResNeStBottleneck(3, 2, stride=2, groups=2, base_width=64, min_inter=2),
                          _x(2, 5, 5, 3), "save"),
    "SKNet": (lambda: models.sknet_tiny(3), _x(2, 6, 6, 1), "save"),
    "ResNeSt": (lambda: models.resnest_tiny(3), _x(2, 6, 6, 1), "save"),
    # CoAtNet (coatnet) and LeViT (levit)
    "CoAtNetRelativeAttention": (lambda: models.CoAtNetRelativeAttention(3, 4, (2, 3), head_dim=2),
                                 _x(1, 2, 3, 3), "save"),
    "CoAtNetTransformerBlock": (lambda: models.CoAtNetTransformerBlock(3, 4, 2, head_dim=2, downsample=True),
                                _x(1, 4, 4, 3), "save"),
    "CoAtNet": (lambda: models.CoAtNet(3, 8, 4, (4, 4, 4, 4), (1, 1, 1, 1), head_dim=2), _x(1, 8, 8, 3), "save"),
    "LinearNorm": (lambda: models.LinearNorm(3, 4), _x(2, 5, 3), "save"),
    "LeViTAttention": (lambda: models.LeViTAttention(4, 2, 2, 2.0, (2, 3)), _x(2, 6, 4), "save"),
    "LeViTAttentionSubsample": (lambda: models.LeViTAttentionSubsample(4, 6, 2, 2, 2.0, 3), _x(2, 9, 4), "save"),
    "LeViTBlock": (lambda: models.LeViTBlock(4, 2, 2, 2), _x(2, 4, 4), "save"),
    "LeViTDownsample": (lambda: models.LeViTDownsample(4, 6, 2, 2, 3), _x(2, 9, 4), "save"),
    "LeViT": (lambda: models.LeViT(3, 32, (8, 16), (2, 2), (1, 1), 4), _x(2, 32, 32, 3), "save"),
    # VQGAN (vqgan, vqgan_prior): images, and code index maps for the prior
    "VQGANResBlock": (lambda: models.VQGANResBlock(4, groups=2), _x(2, 3, 3, 2), "save"),
    "NonLocalBlock": (lambda: models.NonLocalBlock(groups=2), _x(2, 3, 2, 4), "save"),
    "VQGAN": (lambda: models.vqgan_tiny(base_channels=4, z_channels=4, num_embeddings=8, embedding_dim=3, groups=2),
              _x(2, 4, 4, 1), "save"),
    "VQGANTransformer": (lambda: models.VQGANTransformer(models.vqgan_tiny(base_channels=4, z_channels=4,
                                                                           num_embeddings=8, embedding_dim=3,
                                                                           groups=2), (2, 2), hidden_size=8,
                                                         num_layers=1, num_heads=2),
                         lambda: (_ids(2, 2, 2, high=8),), "save"),
    # CaiT (cait)
    "LayerScale": (lambda: models.LayerScale(4, 0.1), _x(2, 3, 4), "save"),
    "TalkingHeadsAttention": (lambda: models.TalkingHeadsAttention(4, 2), _x(2, 3, 4), "save"),
    "ClassAttention": (lambda: models.ClassAttention(4, 2), _x(2, 3, 4), "save"),
    "CaiTBlock": (lambda: models.CaiTBlock(4, 2, mlp_ratio=1.5, layer_scale_init=0.5), _x(2, 3, 4), "save"),
    "ClassAttentionBlock": (lambda: models.ClassAttentionBlock(4, 2, mlp_ratio=1.5), _x(2, 3, 4), "save"),
    "CaiT": (lambda: models.cait(2, 4, 1, 2, mlp_ratio=1.5, num_classes=3, input_shape=(4, 4, 1)), _x(2, 4, 4, 1),
             "save"),
    # Vision Mamba (vision_mamba): tokens for the mixer and the block, images for the model
    "VimMixer": (lambda: models.VimMixer(4, d_state=2, d_conv=3, bimamba=True), _x(2, 5, 4), "save"),
    "VimBlock": (lambda: models.VimBlock(4, norm="layer", d_state=2, bimamba=False), _x(2, 5, 4), "save"),
    "VisionMamba": (lambda: models.VisionMamba((4, 6), 2, 4, 2, 3, d_state=2, channels=1, cls_position="middle"),
                    _x(2, 4, 6, 1), "save"),
    "GatedCNNBlock": (lambda: models.GatedCNNBlock(4, expansion_ratio=2.0, kernel_size=3, conv_ratio=0.5),
                      _x(2, 3, 3, 4), "save"),
    # SlowFast (slowfast) and ViViT (vivit): NTHWC clips; a lateral takes (slow, fast)
    "SlowFastBottleneck": (lambda: models.SlowFastBottleneck(3, 2, 4, temporal_kernel=3, stride=2),
                           _x(2, 2, 4, 4, 3), "save"),
    "SlowFastLateral": (lambda: models.SlowFastLateral(2, alpha=2, kernel=3),
                        lambda: (_normal(2, 2, 3, 3, 3), _normal(2, 4, 3, 3, 2, seed=1)), "save"),
    "SlowFast": (lambda: models.slowfast_tiny(3, (8, 16, 16, 1), width=4, beta_inv=2), _x(2, 8, 16, 16, 1), "save"),
    "TubeletEmbedding": (lambda: models.TubeletEmbedding(4, 2, 2), _x(2, 4, 4, 4, 1), "save"),
    "FactorisedSelfAttentionBlock": (lambda: models.FactorisedSelfAttentionBlock(4, 2, 6), _x(2, 2, 3, 4), "save"),
    "ViViT": (lambda: models.vivit_tiny(3, (4, 8, 8, 1), tubelet_size=2, patch_size=4, dim=4), _x(2, 4, 8, 8, 1),
              "save"),
    # ESRGAN (esrgan)
    "ResidualDenseBlock": (lambda: models.ResidualDenseBlock(4, 2), _x(1, 3, 3, 4), "save"),
    "RRDB": (lambda: models.RRDB(4, 2), _x(1, 3, 3, 4), "save"),
    "RRDBNet": (lambda: models.RRDBNet(2, 1, 2, filters=4, blocks=1, growth=2), _x(1, 3, 3, 1), "save"),
    # masked image modelling (beit, simmim)
    "BEiTAttention": (lambda: models.BEiTAttention(4, 2, (2, 2)), _x(2, 5, 4), "save"),
    "BEiTBlock": (lambda: models.BEiTBlock(4, 2, (2, 2), mlp_ratio=1.5, layer_scale_init=0.5), _x(2, 5, 4), "save"),
    "BEiT": (lambda: models.beit(4, 2, num_classes=3, dim=4, depth=1, num_heads=2, vocab_size=5, channels=1),
             _x(2, 4, 4, 1), "save"),
    "SimMIM": (lambda: models.SimMIM(2, 1, 4, 1, 2, 8), _x(2, 4, 4, 1), "save"),
    # PVT v2 (pvt) and CvT (cvt)
    "OverlapPatchEmbed": (lambda: models.OverlapPatchEmbed(4, 3, 2), _x(2, 5, 5, 3), "save"),
    "SpatialReductionAttention": (lambda: models.SpatialReductionAttention(4, 2, sr_ratio=2), _x(2, 4, 4, 4),
                                  "save"),
    "PVTv2FFN": (lambda: models.PVTv2FFN(4, 6, linear=True), _x(2, 3, 3, 4), "save"),
    "PVTv2Block": (lambda: models.PVTv2Block(4, 2, mlp_ratio=1.5, linear=True), _x(2, 3, 3, 4), "save"),
    "PVTv2": (lambda: models.pvt_v2((4, 4, 4, 4), (1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1), (2, 1, 1, 1),
                                    num_classes=3, input_shape=(16, 16, 1)), _x(2, 16, 16, 1), "save"),
    "ConvEmbed": (lambda: models.ConvEmbed(4, 3, 2, 1), _x(2, 5, 5, 3), "save"),
    "ConvProjectionAttention": (lambda: models.ConvProjectionAttention(4, 2), _x(2, 4, 4, 4), "save"),
    "CvTBlock": (lambda: models.CvTBlock(4, 2, mlp_ratio=1.5), _x(2, 3, 3, 4), "save"),
    "CvT": (lambda: models.cvt((4, 4), (1, 1), (1, 2), mlp_ratio=1.5, num_classes=3, input_shape=(8, 8, 1),
                               patch_sizes=(3, 3), strides=(2, 2), paddings=(1, 1)), _x(2, 8, 8, 1), "save"),
    # Griffin and Hawk (griffin): RG-LRU recurrent blocks and local multi-query attention
    "LocalMQAttention": (lambda: models.LocalMQAttention(4, 2, window=2), _x(2, 3, 4), "save"),
    "GriffinResidualBlock": (lambda: models.GriffinResidualBlock(4, "attention", num_heads=2, window=2,
                                                                 mlp_expansion=2), _x(2, 3, 4), "save"),
    "Griffin": (lambda: models.Griffin(7, 4, 3, num_heads=2, window=2), lambda: (_ids(2, 5, high=7),), "save"),
    "Hawk": (lambda: models.Hawk(7, 4, 2, num_heads=2, lru_width=6), lambda: (_ids(2, 5, high=7),), "save"),
    # differentiable neural computer (dnc)
    "DNC": (lambda: models.DNC(3, memory_size=4, word_size=3, read_heads=2, hidden=5), _x(2, 3, 4), "save"),
    # structural re-parameterization: RepVGG (repvgg) and MobileOne (mobileone)
    "RepVGGBlock": (lambda: models.RepVGGBlock(4, 4, groups=2), _x(1, 5, 5, 4), "save"),
    "RepVGG": (lambda: models.RepVGG((1, 1, 1, 1), (0.0625, 0.0625, 0.0625, 0.0625), num_classes=3, in_channels=1),
               _x(1, 8, 8, 1), "save"),
    "MobileOneBlock": (lambda: models.MobileOneBlock(4, 4, 3, groups=4, num_conv_branches=2), _x(1, 5, 5, 4),
                       "save"),
    "MobileOne": (lambda: models.mobileone_tiny(3, input_shape=(8, 8, 1)), _x(1, 8, 8, 1), "save"),
    # NeuS: a signed distance network, a colour network and the inverse deviation of their renderer
    "SDFNetwork": (lambda: models.SDFNetwork(4, 2, feature_size=2, radius=0.4, pos_freqs=1), _x(5, 3), "save"),
    "ColorNetwork": (lambda: models.ColorNetwork(2, 4, 1, dir_freqs=1),
                     lambda: (_normal(5, 3), _normal(5, 3, seed=1), _normal(5, 3, seed=2), _normal(5, 2, seed=3)),
                     "save"),
    "NeuS": (lambda: models.NeuS(4, 1, 2, 4, 1, radius=0.4), lambda: (_normal(5, 3), _normal(5, 3, seed=1)), "save"),
    # class-conditional GANs (BigGAN): class ids a sample of zeros cannot stand for
    "ProjectionHead": (lambda: models.ProjectionHead(3, 4), lambda: (_normal(2, 4), _ids(2, high=3)), "config"),
    "BigGANGenerator": (lambda: models.BigGANGenerator(2, 8, 1, z_dim=4, shared_dim=3, widths=(8, 8)),
                        lambda: (_normal(2, 4), _ids(2, high=2)), "config"),
    "BigGANDiscriminator": (lambda: models.BigGANDiscriminator(2, 8, 1, widths=(8, 8)),
                            lambda: (_normal(2, 8, 8, 1), _ids(2, high=2)), "config"),
    # neural retrievers: DPR's dual encoder and ColBERT
    "DPRDualEncoder": (lambda: models.DPRDualEncoder(**_TINY_BERT), lambda: (_ids(2, 3), _ids(3, 4, seed=1)), "save"),
    # RETRO (retro): chunked cross-attention to retrieved neighbours
    "ChunkedCrossAttention": (lambda: models.ChunkedCrossAttention(4, 2, 2), lambda: (_normal(2, 5, 4),
                                                                                    _normal(2, 2, 2, 3, 4, seed=1)),
                              "save"),
    "RETRO": (lambda: models.RETRO(7, 4, 2, 2, 6, 2, cca_layers=(1,), encoder_layers=1),
              lambda: (_ids(2, 5, high=7), _ids(2, 2, 2, 4, high=7, seed=1)), "save"),
    # OWL-ViT: open-vocabulary detection on a CLIP
    "OWLViT": (lambda: models.OWLViT(models.clip("tiny"), box_hidden=8),
               lambda: (_normal(2, 16, 16, 3), _ids(3, 2, high=300)), "save"),
    # CLIPSeg (clipseg): images and one text prompt each; the decoder takes activations and a condition
    "CLIPSeg": (lambda: models.CLIPSeg(models.clip("tiny"), (0, 1), reduce_dim=4, num_heads=2, intermediate_size=6,
                                       complex_head=True), lambda: (_normal(2, 16, 16, 3), _ids(2, 1, high=300)),
                "save"),
    "CLIPSegDecoder": (lambda: models.CLIPSegDecoder(6, 3, 2, 4, reduce_dim=4, num_heads=2, intermediate_size=6),
                       lambda: ([_normal(2, 5, 6), _normal(2, 5, 6, seed=1)], _normal(2, 3, seed=2)), "save"),
    "ColBERT": (lambda: models.ColBERT(dim=3, query_maxlen=5, mask_token_id=5, skiplist=(4,), **_TINY_BERT),
                lambda: (_ids(2, 3, high=4) + 1, _ids(3, 4, seed=1)), "save"),
    # graph collaborative filtering: (users, items) pairs scored on the normalised user-item graph
    "LightGCN": (lambda: models.LightGCN(4, 5, dim=3, num_layers=2),
                 lambda: (_ids(3, high=4), _ids(3, seed=1), _user_item_graph()), "save"),
    "NGCF": (lambda: models.NGCF(4, 5, dim=3, layer_sizes=(4, 2)),
             lambda: (_ids(3, high=4), _ids(3, seed=1), _user_item_graph()), "save"),
    "NGCFLayer": (lambda: models.NGCFLayer(3, 2), lambda: (_normal(9, 3), _user_item_graph()), "save"),
    "WaveRNN": (lambda: models.WaveRNN(8, 6, mode="single", bits=9, local_channels=3, hop_length=4,
                                       upsample="learned"), lambda: (_ids(2, 9, high=512), _normal(2, 3, 3)), "save"),
    # DiffWave (diffwave): audio, diffusion steps and mel frames
    "DiffusionStepEmbedding": (lambda: models.DiffusionStepEmbedding(8, 6), lambda: (_ids(3, high=50),), "save"),
    "SpectrogramUpsampler": (lambda: models.SpectrogramUpsampler((4, 2)), _x(2, 3, 4), "save"),
    "DiffWaveResidualLayer": (lambda: models.DiffWaveResidualLayer(3, 2, step_channels=4, n_mels=2),
                              lambda: (_normal(2, 5, 3), _normal(2, 4, seed=1), _normal(2, 5, 2, seed=2)), "save"),
    "DiffWave": (lambda: models.diffwave_tiny(n_mels=3, residual_channels=4, residual_layers=2, dilation_cycle=2),
                 lambda: (_normal(2, 32), _ids(2, high=50), _normal(2, 2, 3, seed=1)), "save"),
    # quantile distributional RL (lamina.rl.quantile, lamina.rl.iqn): observations and quantile fractions
    "QRDQNNetwork": (lambda: lamina.rl.QRDQNNetwork(3, 2, hidden=(4,), n_quantiles=5), _x(2, 3), "save"),
    "QuantileEmbedding": (lambda: lamina.rl.QuantileEmbedding(4, n_cos=6),
                          lambda: (np.random.default_rng(0).random((2, 3)),), "save"),
    "IQNNetwork": (lambda: lamina.rl.IQNNetwork(3, 2, hidden=(4,), head_hidden=4, n_cos=6),
                   lambda: (_normal(2, 3), np.random.default_rng(1).random((2, 5))), "save"),
    # curiosity (lamina.rl.curiosity): RND on observations, ICM on (s_t, s_t+1, a_t)
    "RNDModule": (lambda: lamina.rl.RNDModule(3, feature_dim=2, hidden=(4,)), _x(2, 3), "save"),
    "ICMModule": (lambda: lamina.rl.ICMModule(3, 2, feature_dim=2, hidden=(4,), beta=0.3, eta=0.5),
                  lambda: (_normal(2, 3), _normal(2, 3, seed=1), np.array([1, 0])), "save"),
    # diffusion policy (lamina.rl.offline): (noisy action sequences, diffusion steps, condition or obs history)
    "ConditionalResidualBlock1D": (lambda: lamina.rl.offline.ConditionalResidualBlock1D(2, 3, 4, groups=1),
                                   lambda: (_normal(2, 5, 2), _normal(2, 4, seed=1)), "save"),
    "TemporalUNet": (lambda: lamina.rl.offline.TemporalUNet(2, 3, down_dims=(2, 4), kernel_size=3, groups=2,
                                                            step_embed_dim=4),
                     lambda: (_normal(2, 4, 2), _ids(2, high=10), _normal(2, 3, seed=1)), "save"),
    "DiffusionPolicy": (lambda: lamina.rl.offline.DiffusionPolicy(3, 2, horizon=4, n_obs_steps=2, n_action_steps=2,
                                                                  down_dims=(2, 4), kernel_size=3, groups=2,
                                                                  step_embed_dim=4, num_timesteps=10),
                        lambda: (_normal(2, 4, 2), _ids(2, high=10), _normal(2, 2, 3, seed=1)), "save"),
    # SOLOv2 (solo): instances (masks, labels, scores) in evaluation
    "SOLOv2": (lambda: models.solov2_tiny(2, widths=(4, 4, 4), fpn_channels=4, head_channels=4, mask_channels=4,
                                          mask_branch_channels=4, groups=2, score_thresh=0.0), _x(1, 16, 16, 3),
               "save"),
    # DeepLabv3+ (deeplabv3_plus): (low-level, encoder) maps for the decoder
    "DeepLabV3PlusDecoder": (lambda: models.DeepLabV3PlusDecoder(3, 2, 4, separable=True),
                             lambda: (_normal(2, 4, 4, 3), _normal(2, 2, 2, 5, seed=1)), "save"),
    "DeepLabV3Plus": (lambda: models.deeplabv3_plus_tiny(3, width=2, input_shape=(16, 16, 1)), _x(2, 16, 16, 1),
                      "save"),
    # CrossViT (crossvit): the two branches' tokens
    "CrossAttentionFusion": (lambda: models.CrossAttentionFusion(4, 6, 2),
                             lambda: (_normal(2, 3, 4), _normal(2, 5, 6, seed=1)), "save"),
    "MultiScaleBlock": (lambda: models.MultiScaleBlock((4, 6), (1, 1), (2, 2), (1.5, 1.0)),
                        lambda: (_normal(2, 3, 4), _normal(2, 5, 6, seed=1)), "save"),
    "CrossViT": (lambda: models.crossvit((2, 4), (8, 8), (4, 6), (1, 1), 2, 1.5, 1, 3, (8, 8, 1)), _x(2, 8, 8, 1),
                 "save"),
    # GloVe (glove): (word, context) id pairs
    "GloVe": (lambda: models.GloVe(7, 3, x_max=10.0, alpha=0.5), lambda: (_ids(4, high=7), _ids(4, high=7, seed=1)),
              "save"),
    # AWD-LSTM and ULMFiT (awd_lstm): word ids
    "AWDLSTM": (lambda: models.AWDLSTM(6, 3, 4, 2), lambda: (_ids(2, 5, high=6),), "save"),
    "ULMFiTClassifier": (lambda: models.ULMFiTClassifier(6, 2, 3, 4, 2, head_hidden=3),
                         lambda: (_ids(2, 5, high=6),), "save"),
    # prior-fitted networks (pfn): training points (x, class ids) and query points
    "PFN": (lambda: models.PFN(2, 3, d_model=4, heads=2, layers=1, task="classification"),
            lambda: (_normal(2, 5, 2), _ids(2, 5, high=3), _normal(2, 3, 2, seed=1)), "save"),
    # metric-based few-shot learners (matching_network, relation_network): (support x, support y, query x)
    "SupportContextLSTM": (lambda: models.SupportContextLSTM(), _x(5, 3), "config"),
    "AttentionLSTM": (lambda: models.AttentionLSTM(2), lambda: (_normal(4, 3), _normal(5, 3, seed=1)), "config"),
    "MatchingNetwork": (lambda: models.MatchingNetwork(nn.Dense(3), processing_steps=2),
                        lambda: (_normal(6, 2), np.arange(6) % 3, _normal(4, 2, seed=1)), "save"),
    "RelationNetwork": (lambda: models.RelationNetwork(nn.Dense(3), nn.Dense(1), objective="cross_entropy"),
                        lambda: (_normal(6, 2), np.arange(6) % 3, _normal(4, 2, seed=1)), "save"),
    # GP kernels (kernels, registered as kernels.<name>; an ARD length scale is sized on the first call),
    # exact GP regression with its training data, SVGP, deep kernels: rows (n, d)
    "kernels.RBF": (lambda: models.kernels.RBF(0.7, ard=True), lambda: (_normal(5, 2), _normal(3, 2, seed=1)), "save"),
    "kernels.Matern": (lambda: models.kernels.Matern([0.5, 1.2], nu=0.5), _x(5, 2), "save"),
    "kernels.RationalQuadratic": (lambda: models.kernels.RationalQuadratic(0.8, alpha=2.0), _x(5, 2), "save"),
    "kernels.Periodic": (lambda: models.kernels.Periodic(1.2, period=2.0), _x(5, 2), "save"),
    "kernels.DotProduct": (lambda: models.kernels.DotProduct(0.5), _x(5, 2), "save"),
    "kernels.White": (lambda: models.kernels.White(0.3), _x(5, 2), "save"),
    "kernels.Constant": (lambda: models.kernels.Constant(2.0), _x(5, 2), "save"),
    "kernels.ScaleKernel": (lambda: models.kernels.ScaleKernel(models.kernels.RBF(), 2.0), _x(5, 2), "save"),
    "kernels.Sum": (lambda: models.kernels.ScaleKernel(models.kernels.RBF(ard=True)) + models.kernels.White(0.1),
                    _x(5, 2), "save"),
    "kernels.Product": (lambda: models.kernels.Periodic() * models.kernels.RBF(),
                        lambda: (_normal(5, 2), _normal(3, 2, seed=1)), "save"),
    "DeepKernel": (lambda: models.DeepKernel(models.kernels.ScaleKernel(models.kernels.RBF(ard=True)), nn.Dense(3)),
                   _x(5, 2), "save"),
    "GaussianProcessRegressor": (lambda: models.GaussianProcessRegressor(
        models.kernels.ScaleKernel(models.kernels.RBF()) + models.kernels.White(0.1), mean="constant",
        normalize_y=True).set_data(_normal(6, 2), _normal(6, seed=2)), lambda: (_normal(3, 2, seed=1),), "save"),
    "SVGP": (lambda: models.SVGP(_normal(4, 2), models.kernels.ScaleKernel(models.kernels.Matern(nu=2.5)), noise=0.1),
             lambda: (_normal(5, 2, seed=1),), "save"),
    # importance-weighted autoencoder (iwae): (reconstruction logits, mu, log_var), z = mu in evaluation
    "IWAE": (lambda: models.IWAE(2, hidden=(4,), input_shape=(3,), num_samples=3, estimator="dreg"), _x(2, 3),
             "save"),
    # latent ODEs and ODE-RNNs (latent_ode, ode_rnn): (values, times, mask) on a shared grid; (t, h) for f
    "ODEFunc": (lambda: models.ODEFunc(3, hidden=(4, 2)), lambda: (0.0, _normal(2, 3)), "save"),
    "ODERNN": (lambda: models.ODERNN(2, hidden=3, ode_hidden=4, reverse=True, method="euler"),
               lambda: (_normal(2, 4, 2), np.array([0.0, 0.3, 1.0, 1.2]), _ids(2, 4, 2, high=2)), "save"),
    "LatentODE": (lambda: models.LatentODE(2, latent_dim=3, rec_hidden=3, rec_ode_hidden=4, ode_hidden=4,
                                           decoder_hidden=(3,), method="rk4", options={"step_size": 0.25}),
                  lambda: (_normal(2, 4, 2), np.array([0.0, 0.3, 1.0, 1.2]), _ids(2, 4, 2, high=2)), "save"),
    # data2vec (data2vec, data2vec_encoders): images or vector sequences; the student's features, or the loss
    "Data2VecImageEncoder": (lambda: models.Data2VecImageEncoder(4, 2, 1, 4, depth=1, num_heads=2), _x(2, 4, 4, 1),
                             "save"),
    "Data2VecSequenceEncoder": (lambda: models.Data2VecSequenceEncoder(3, 4, depth=1, num_heads=2), _x(2, 5, 3),
                                "save"),
    "Data2VecDecoder": (lambda: models.Data2VecDecoder(4, 4, layers=2, groups=2, grid_size=(2, 2)), _x(2, 4, 4),
                        "save"),
    "Data2Vec": (lambda: models.Data2Vec(models.Data2VecSequenceEncoder(3, 4, depth=2, num_heads=2), top_k=2,
                                         decoder=models.Data2VecDecoder(4, 4, layers=1, groups=2)), _x(2, 5, 3), "save",
                 {"mask": np.array([[True, False, True, False, False], [False, True, True, False, True]])}),
}


def test_every_class_registered_by_its_arguments_is_round_tripped():
    """Every class made saveable by ``register_with_arguments`` has a case above (all are small and fast)."""
    by_arguments = {name for name, cls in public_model_classes().items() if "__wrapped__" in cls.__init__.__dict__}
    assert len(by_arguments) == 290 and sorted(by_arguments - set(CASES)) == []


def _flat(output) -> list[np.ndarray]:
    if isinstance(output, dict):
        return [a for key in sorted(output) for a in _flat(output[key])]
    if isinstance(output, (tuple, list)):
        return [a for item in output for a in _flat(item)]
    if hasattr(output, "__dataclass_fields__"):
        return [a for key in sorted(output.__dataclass_fields__) for a in _flat(getattr(output, key))]
    if output is None:
        return []
    return [np.asarray(output.numpy() if hasattr(output, "numpy") else output)]


def _perturb(model) -> None:
    """Move every parameter away from its initial value, so that a copy with fresh weights
    could not pass for a loaded one."""
    rng = np.random.default_rng(7)
    for param in model.parameters():
        param.data = (param.data + 0.05 * rng.normal(size=param.shape)).astype(param.dtype)


def _copy_by_config(model, inputs, kwargs, path):
    """The model rebuilt from its JSON config, built on ``inputs``, given the state dict saved to ``path``."""
    save_file({k: lamina.backend.to_numpy(v) for k, v in model.state_dict().items()}, path)
    twin = nn.layer_from_config(json.loads(json.dumps(nn.layer_to_config(model))))
    twin.eval()
    with no_grad():
        twin(*inputs, **kwargs)
    twin.load_state_dict(load_file(path)[0])
    return twin


@pytest.mark.parametrize("case", sorted(CASES))
def test_registered_model_round_trips(case, tmp_path):
    make_model, make_inputs, how, *options = CASES[case]
    kwargs = options[0] if options else {}
    model, inputs = make_model(), make_inputs()
    assert type(model) in set(nn.registered_layers().values())
    model.eval()
    with no_grad():
        model(*inputs, **kwargs)                    # builds lazily created weights
    _perturb(model)
    with no_grad():
        expected = _flat(model(*inputs, **kwargs))
    path = tmp_path / "model.safetensors"
    if how == "save":
        lamina.save(model, path)
        twin = lamina.load(path)
    else:
        twin = _copy_by_config(model, inputs, kwargs, path)
    assert type(twin) is type(model) and twin.get_config() == model.get_config()
    state, twin_state = model.state_dict(), twin.state_dict()
    assert sorted(twin_state) == sorted(state)
    to_numpy = lamina.backend.to_numpy
    assert all(np.array_equal(to_numpy(twin_state[k]), to_numpy(v)) for k, v in state.items())
    with no_grad():
        got = _flat(twin(*inputs, **kwargs))
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and np.array_equal(a, b), case




def test_readme_example_saves_and_loads_a_zoo_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed, names = run_readme_section("Saving the model zoo's models")
    assert printed.split() == ["Dense", "True"]
    assert type(names["twin"]) is models.DeepSets and (tmp_path / "deepsets.safetensors").exists()
