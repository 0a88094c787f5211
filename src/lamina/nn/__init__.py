"""Modules, parameters, layers and initializers.

Layers work on batches with the samples first and the channels last ((N, features) and
NHWC (N, H, W, C)), create their weights lazily on the first call, and can describe
themselves with ``get_config()`` for saving architectures (:func:`layer_to_config`,
:func:`layer_from_config`, :func:`register_layer` for your own layers).
"""

from lamina.nn import compression, functional, init, merging, nas, parametrize, prune, ptq, qat, quantize, spikegen
from lamina.nn.activation import (
    ACTIVATIONS,
    ELU,
    GELU,
    SELU,
    Activation,
    HardSigmoid,
    HardSwish,
    LeakyReLU,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    get_activation,
)
from lamina.nn.activation_extra import (
    CELU,
    Hardshrink,
    Hardtanh,
    LogSigmoid,
    Softmin,
    Softshrink,
    Softsign,
    Tanhshrink,
    Threshold,
)
from lamina.nn.activation_more import GLU, LogSoftmax, RReLU, Softmax2D
from lamina.nn.adapters import BottleneckAdapter, WithAdapter, apply_bottleneck_adapters
from lamina.nn.adaptive import (
    AdaptiveAvgPool1D,
    AdaptiveAvgPool2D,
    AdaptiveMaxPool1D,
    AdaptiveMaxPool2D,
    PixelShuffle,
    PixelUnshuffle,
    ReflectionPad2D,
    ReplicationPad2D,
)
from lamina.nn.adaptive3d import AdaptiveAvgPool3D, AdaptiveMaxPool3D
from lamina.nn.adaptive_softmax import AdaptiveLogSoftmaxWithLoss
from lamina.nn.angular_margin import (
    ArcFaceLoss,
    CenterLoss,
    CombinedMarginLoss,
    CosFaceLoss,
    NormalizedSoftmaxLoss,
    SphereFaceLoss,
    SubCenterArcFace,
)
from lamina.nn.attention import AdditiveAttention, Attention
from lamina.nn.audio import MFCC, AmplitudeToDB, FrequencyMasking, MelSpectrogram, Spectrogram, TimeMasking
from lamina.nn.audio_effects import Deemphasis, Fade, Preemphasis
from lamina.nn.audio_synthesis import GriffinLim, InverseMelScale, MuLawDecoding, MuLawEncoding, Resample
from lamina.nn.augmentation import (
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomGaussianBlur,
    RandomRotation,
    RandomSaturation,
)
from lamina.nn.augmentation_more import ColorJitter, RandomErasing, RandomGrayscale, RandomResizedCrop
from lamina.nn.awd_dropout import (
    LockedDropout,
    WeightDrop,
    activation_regularization,
    embedding_dropout,
    temporal_activation_regularization,
)
from lamina.nn.bayesian import (
    BayesianDense,
    BayesianLayer,
    bayesian_kl,
    elbo_loss,
    gaussian_kl,
    mc_predict,
    scale_mixture_log_prob,
)
from lamina.nn.bayesian_conv import BayesianConv2D
from lamina.nn.bilinear import Bilinear, bilinear
from lamina.nn.bitlinear import BitLinear, PackedBitLinear, absmax_quantize, absmean_ternary
from lamina.nn.capsules import CapsuleLayer, DigitCapsules, PrimaryCapsules, capsule_lengths
from lamina.nn.cells import GRUCell, LSTMCell, SimpleRNNCell
from lamina.nn.channel_shuffle import ChannelShuffle, channel_shuffle
from lamina.nn.compression import compress_model, factorize_conv, factorize_dense, prune_filters
from lamina.nn.conditioning import ConditionalBatchNorm, FiLM
from lamina.nn.containers import ModuleDict, ModuleList, ParameterDict, ParameterList
from lamina.nn.conv import Conv2D, DepthwiseConv2D, SeparableConv2D
from lamina.nn.conv1d import AvgPool1D, Conv1D, GlobalAvgPool1D, GlobalMaxPool1D, MaxPool1D
from lamina.nn.conv3d import AvgPool3D, Conv3D, GlobalAvgPool3D, MaxPool3D
from lamina.nn.conv_lstm import ConvLSTM2D
from lamina.nn.conv_transpose import Conv2DTranspose
from lamina.nn.conv_transpose_nd import Conv1DTranspose, Conv3DTranspose
from lamina.nn.convert import fully_connected_to_conv
from lamina.nn.crf import CRF
from lamina.nn.deform_conv import DeformConv2D
from lamina.nn.delta_net import DeltaNet, GatedDeltaNet
from lamina.nn.dense import Dense, linear
from lamina.nn.dense4bit import Dense4bit
from lamina.nn.deq import DEQ
from lamina.nn.differential_attention import DifferentialAttention
from lamina.nn.distance import CosineSimilarity, PairwiseDistance
from lamina.nn.dora import DoRADense, apply_dora
from lamina.nn.dropout import DropConnect, Dropout
from lamina.nn.dyt import DyT, replace_norms_with_dyt
from lamina.nn.efficient_attention import LinformerAttention, LSHAttention, NystromAttention
from lamina.nn.embedding import Embedding, embedding
from lamina.nn.embedding_bag import EmbeddingBag, embedding_bag
from lamina.nn.evidential import DirichletHead, NormalInverseGammaHead
from lamina.nn.expert_choice import ExpertChoiceMoE
from lamina.nn.flat_parameters import parameters_to_vector, vector_to_parameters
from lamina.nn.fold import Fold, Unfold
from lamina.nn.fractional_pool import FractionalMaxPool2D, FractionalMaxPool3D
from lamina.nn.functional_call import functional_call
from lamina.nn.functional_model import Input, Model
from lamina.nn.gated_linear_attention import GatedLinearAttention
from lamina.nn.ge2e import GE2ELoss
from lamina.nn.gradient_reversal import GradientReversal
from lamina.nn.graph import (
    APPNP,
    AttentionalAggregation,
    CentralityEncoding,
    CFConv,
    ChebConv,
    EGNNLayer,
    GATConv,
    GATv2Conv,
    GCN2Conv,
    GCNConv,
    GINConv,
    GlobalAddPool,
    GlobalMaxPool,
    GlobalMeanPool,
    GPSLayer,
    GraphConv,
    GraphormerLayer,
    HeteroConv,
    RGCNConv,
    SAGEConv,
    SAGPooling,
    Set2Set,
    SGConv,
    TemporalGraphAttention,
    TimeEncoder,
    TopKPooling,
    TransformerConv,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)
from lamina.nn.grn import GlobalResponseNorm, global_response_norm
from lamina.nn.group_conv import GroupBatchNorm, GroupPool, P4ConvP4, P4ConvZ2, P4MConvP4M, P4MConvZ2
from lamina.nn.hash_encoding import HashGridEncoding, HashGridMLP, hash_grid_encode
from lamina.nn.head_hooks import HeadOutputs
from lamina.nn.histogram_observer import HistogramObserver
from lamina.nn.hooks import HookHandle, capture_activations
from lamina.nn.hopfield import Hopfield, HopfieldLayer, HopfieldPooling, hopfield_retrieval
from lamina.nn.hyena import HyenaOperator
from lamina.nn.hyperbolic import HypAct, HyperbolicMLR, HypLinear, PoincareEmbedding
from lamina.nn.hypernetwork import HyperNetwork
from lamina.nn.ia3 import IA3Dense, IA3Scale, apply_ia3
from lamina.nn.implicit_representation import FourierFeatures, SineLayer, Siren
from lamina.nn.instance_norm import InstanceNorm1D, InstanceNorm2D, InstanceNorm3D
from lamina.nn.kan import FastKANLayer, KANLinear
from lamina.nn.kan_symbolic import SYMBOLIC_FUNCTIONS, SymbolicFit, fit_symbolic
from lamina.nn.latent_attention import MultiHeadLatentAttention
from lamina.nn.layer import default_name, layer_from_config, layer_to_config, register_layer, registered_layers
from lamina.nn.linear_attention import LinearAttention, PerformerAttention
from lamina.nn.loha import LoHaDense, LoKrDense, VeRADense, apply_loha, apply_lokr, apply_vera
from lamina.nn.lookup import IntegerLookup, StringLookup
from lamina.nn.lora import LoRAAdapter, LoRADense, apply_lora, lora_state_dict, merge_lora, unmerge_lora
from lamina.nn.losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    CTCLoss,
    GaussianNLLLoss,
    HingeEmbeddingLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MarginRankingLoss,
    MSELoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    NLLLoss,
    PoissonNLLLoss,
    RelativeLpLoss,
    SmoothL1Loss,
    SoftMarginLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
)
from lamina.nn.lp_pool import LPPool1D, LPPool2D, LPPool3D
from lamina.nn.lru import LRU
from lamina.nn.mamba import MambaBlock
from lamina.nn.mamba2 import Mamba2Block
from lamina.nn.manifold_parameter import ManifoldParameter
from lamina.nn.masked_conv import MaskedConv2D, causal_mask
from lamina.nn.merge import Add, Concatenate
from lamina.nn.merging import merge_models
from lamina.nn.min_rnn import MinGRU, MinLSTM
from lamina.nn.mixture_density import MixtureDensityHead
from lamina.nn.mixture_of_depths import MixtureOfDepths
from lamina.nn.module import Module
from lamina.nn.moe import MixtureOfExperts
from lamina.nn.ms_deform_attn import DeformableTransformerEncoderLayer, MultiScaleDeformableAttention
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.noise import (
    AlphaDropout,
    Dropout1D,
    Dropout2D,
    Dropout3D,
    FeatureAlphaDropout,
    GaussianDropout,
    GaussianNoise,
    SpatialDropout1D,
    SpatialDropout2D,
)
from lamina.nn.noisy import NoisyDense, reset_noise
from lamina.nn.normalization import BatchNorm, LocalResponseNorm
from lamina.nn.observers import (
    FakeQuantize,
    FixedQParamsObserver,
    FusedMovingAvgObsFakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    NoopObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from lamina.nn.ode_block import ODEBlock
from lamina.nn.optnet import OptNetLayer
from lamina.nn.orthogonal import orthogonal
from lamina.nn.packed_sequence import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    unpack_sequence,
)
from lamina.nn.padding import (
    CircularPad1D,
    CircularPad2D,
    CircularPad3D,
    ConstantPad1D,
    ConstantPad2D,
    ConstantPad3D,
    ReflectionPad1D,
    ReflectionPad3D,
    ReplicationPad1D,
    ReplicationPad3D,
    ZeroPad1D,
    ZeroPad3D,
)
from lamina.nn.parameter import Parameter
from lamina.nn.peft import (
    AdapterConfig,
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    VeraConfig,
    adapter_state_dict,
    get_peft_model,
    load_adapter,
    merge_adapters,
    print_trainable_parameters,
    save_adapter,
    unmerge_adapters,
)
from lamina.nn.per_sample import PerSampleGradients, per_sample_gradients
from lamina.nn.perceptual_loss import PerceptualLoss
from lamina.nn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D, MaxUnpool2D
from lamina.nn.preprocessing import CategoryEncoding, Discretization, Hashing, Normalization
from lamina.nn.prompt_tuning import PrefixTuningLM, PromptTuningLM
from lamina.nn.ptq import QuantDense, awq_quantize, gptq_quantize, smooth_quant
from lamina.nn.qat import QATConv2D, QATDense, calibrate, fuse_conv_bn, prepare_qat
from lamina.nn.qlora import prepare_model_for_kbit_training, quantize_model_4bit
from lamina.nn.quant4 import QuantState, dequantize_4bit, quantize_4bit
from lamina.nn.rearrange import Rearrange, Reduce
from lamina.nn.recurrent import GRU, LSTM, Bidirectional, SimpleRNN
from lamina.nn.reshape import Flatten, Identity, Reshape, Unflatten
from lamina.nn.resize import Cropping2D, UpSampling2D, ZeroPadding2D
from lamina.nn.retention import MultiScaleRetention
from lamina.nn.revin import RevIN
from lamina.nn.rglru import RGLRU, GriffinRecurrentBlock
from lamina.nn.rms_norm import RMSNorm
from lamina.nn.rwkv import RWKVChannelMix, RWKVTimeMix
from lamina.nn.sample_norm import GroupNorm, LayerNorm
from lamina.nn.scaled_std_conv import ScaledStdConv2D, scaled_standardized_weight
from lamina.nn.self_attention_2d import SelfAttention2D
from lamina.nn.sequence_utils import pad_sequence, unpad_sequence
from lamina.nn.sequential import Sequential
from lamina.nn.set_attention import ISAB, MAB, PMA, SAB, multihead_attention
from lamina.nn.set_layers import DeepSetsPooling, PermEquivariant
from lamina.nn.slot_attention import SlotAttention
from lamina.nn.sngp import BoundedSpectralNorm, RandomFeatureGaussianProcess, SNGPResMLP, mean_field_logits
from lamina.nn.soft_moe import SoftMoE
from lamina.nn.spatial_transformer import SpatialTransformer
from lamina.nn.spectral_conv import SpectralConv1D, SpectralConv2D, spectral_conv1d, spectral_conv2d
from lamina.nn.spiking import Lapicque, Leaky, RLeaky, SpikingNeuron, Synaptic
from lamina.nn.spiking_sequence import SpikingSequential
from lamina.nn.ssm import S4D
from lamina.nn.stochastic_depth import StochasticDepth, stochastic_depth
from lamina.nn.tabular import FeatureTokenizer, PeriodicEmbeddings, PiecewiseLinearEncoding, quantile_bins
from lamina.nn.text_preprocessing import TextVectorization
from lamina.nn.transformer import PositionalEncoding, PositionEmbedding, TransformerEncoderLayer
from lamina.nn.transformer_decoder import TransformerDecoderLayer, from_torch_state_dict
from lamina.nn.transformer_model import Transformer, TransformerDecoder, TransformerEncoder
from lamina.nn.ttt import TTTMLP, TTTLinear
from lamina.nn.unpool_nd import MaxUnpool1D, MaxUnpool3D
from lamina.nn.upsample import Upsample, UpsamplingBilinear2D, UpsamplingNearest2D
from lamina.nn.vector_quantizer import FSQ, ResidualVQ, VectorQuantizer, VectorQuantizerEMA
from lamina.nn.weight_norms import SpectralNorm, WeightNorm
from lamina.nn.wrappers import TimeDistributed
from lamina.nn.xlstm import mLSTM, sLSTM

__all__ = [
    "LoRAAdapter", "LoRADense", "apply_lora", "lora_state_dict", "merge_lora", "unmerge_lora", "MixtureOfExperts",
    "SoftMoE", "ExpertChoiceMoE",
    "ACTIVATIONS", "Activation", "Add", "AdditiveAttention", "Attention", "AvgPool1D", "AvgPool2D", "BatchNorm",
    "Bidirectional", "Concatenate", "Conv1D", "Conv2D", "Conv2DTranspose", "Cropping2D", "Dense",
    "DepthwiseConv2D", "DropConnect", "Dropout", "ELU", "Embedding", "Flatten", "GELU", "GRU", "GlobalAvgPool1D",
    "GlobalAvgPool2D", "GlobalMaxPool1D", "GroupNorm", "HardSigmoid", "HardSwish", "Identity", "LSTM",
    "LayerNorm", "LeakyReLU", "LocalResponseNorm", "MaxPool1D", "MaxPool2D", "Mish", "Module",
    "MultiHeadAttention", "PReLU", "Parameter", "PositionEmbedding", "PositionalEncoding", "RandomBrightness",
    "RandomContrast", "RandomCrop", "RandomFlip", "RandomGaussianBlur", "RandomRotation", "RandomSaturation",
    "ColorJitter", "RandomErasing", "RandomGrayscale", "RandomResizedCrop",
    "ReLU", "ReLU6", "Reshape", "SELU", "SeparableConv2D", "Sequential", "SiLU", "Sigmoid", "SimpleRNN",
    "Softmax", "Softplus", "Tanh", "TransformerEncoderLayer", "UpSampling2D", "ZeroPadding2D", "default_name",
    "embedding", "fully_connected_to_conv", "functional", "get_activation", "init", "layer_from_config",
    "layer_to_config", "linear", "register_layer", "registered_layers", "TimeDistributed", "AlphaDropout",
    "GaussianDropout",
    "GaussianNoise", "SpatialDropout1D", "SpatialDropout2D", "SpectralNorm", "WeightNorm", "HookHandle", "Input",
    "Model", "capture_activations", "GRUCell", "LSTMCell", "SimpleRNNCell",
    "ModuleDict", "ModuleList", "ParameterDict", "ParameterList", "prune", "quantize", "SpatialTransformer",
    "CELU", "Hardshrink", "Hardtanh", "LogSigmoid", "Softmin", "Softshrink", "Softsign", "Tanhshrink", "Threshold",
    "AdaptiveAvgPool1D", "AdaptiveAvgPool2D", "AdaptiveMaxPool1D", "AdaptiveMaxPool2D", "PixelShuffle",
    "PixelUnshuffle", "ReflectionPad2D", "ReplicationPad2D", "Fold", "Unfold", "MaxUnpool2D", "Upsample",
    "InstanceNorm1D", "InstanceNorm2D", "Bilinear", "bilinear", "CosineSimilarity", "PairwiseDistance",
    "EmbeddingBag", "embedding_bag", "Conv3D", "MaxPool3D", "AvgPool3D", "GlobalAvgPool3D", "functional_call",
    "PerSampleGradients", "per_sample_gradients",
    "parameters_to_vector", "vector_to_parameters",
    "ConvLSTM2D", "Transformer", "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder",
    "from_torch_state_dict",
    "ChannelShuffle", "StochasticDepth", "channel_shuffle", "stochastic_depth",
    "CFConv", "EGNNLayer",
    "GATConv", "GCNConv", "GINConv", "GlobalAddPool", "GlobalMaxPool", "GlobalMeanPool", "SAGEConv",
    "global_add_pool", "global_max_pool", "global_mean_pool",
    "APPNP", "AttentionalAggregation", "ChebConv", "GATv2Conv", "GCN2Conv", "GraphConv", "SAGPooling", "SGConv",
    "Set2Set", "TemporalGraphAttention", "TimeEncoder", "TopKPooling", "TransformerConv",
    "qat", "FakeQuantize", "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
    "FixedQParamsObserver", "HistogramObserver", "MovingAveragePerChannelMinMaxObserver", "NoopObserver",
    "PlaceholderObserver", "FusedMovingAvgObsFakeQuantize",
    "QATConv2D", "QATDense", "calibrate", "fuse_conv_bn", "prepare_qat",
    "BayesianDense", "bayesian_kl", "gaussian_kl", "mc_predict",
    "BayesianConv2D", "BayesianLayer", "elbo_loss", "scale_mixture_log_prob", "MixtureDensityHead",
    "AmplitudeToDB", "FrequencyMasking", "MFCC", "MelSpectrogram", "Spectrogram", "TimeMasking",
    "GLU", "LogSoftmax", "RReLU", "Softmax2D", "Conv1DTranspose", "Conv3DTranspose", "LPPool1D", "LPPool2D", "LPPool3D",
    "RMSNorm", "Unflatten", "CircularPad1D", "CircularPad2D", "CircularPad3D", "ConstantPad1D", "ConstantPad2D",
    "ConstantPad3D", "ReflectionPad1D", "ReflectionPad3D", "ReplicationPad1D", "ReplicationPad3D", "ZeroPad1D",
    "ZeroPad3D", "RevIN",
    "AdaptiveAvgPool3D", "AdaptiveMaxPool3D",
    "AdaptiveLogSoftmaxWithLoss", "FractionalMaxPool2D", "FractionalMaxPool3D", "MaxUnpool1D", "MaxUnpool3D",
    "orthogonal", "pad_sequence", "parametrize", "unpad_sequence",
    "PackedSequence", "pack_padded_sequence", "pack_sequence", "pad_packed_sequence", "unpack_sequence",
    "SpectralConv1D", "SpectralConv2D", "spectral_conv1d", "spectral_conv2d",
    "OptNetLayer",
]
__all__ += [  # loss modules under PyTorch's names
    "BCELoss", "BCEWithLogitsLoss", "CTCLoss", "CosineEmbeddingLoss", "CrossEntropyLoss", "GaussianNLLLoss",
    "HingeEmbeddingLoss", "HuberLoss", "KLDivLoss", "L1Loss", "MSELoss", "MarginRankingLoss", "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss", "MultiMarginLoss", "NLLLoss", "PoissonNLLLoss", "SmoothL1Loss", "SoftMarginLoss",
    "TripletMarginLoss", "TripletMarginWithDistanceLoss", "RelativeLpLoss",
]
__all__ += [  # layers under PyTorch's names
    "Dropout1D", "Dropout2D", "Dropout3D", "FeatureAlphaDropout", "InstanceNorm3D", "UpsamplingBilinear2D",
    "UpsamplingNearest2D",
]
__all__ += ["Rearrange", "Reduce"]  # einops-style layers
__all__ += [  # Keras-style preprocessing layers
    "CategoryEncoding", "Discretization", "Hashing", "IntegerLookup", "Normalization", "StringLookup",
    "TextVectorization",
]
__all__ += ["MambaBlock"]  # selective state-space mixer (mamba)
__all__ += ["Mamba2Block"]  # state-space duality mixer (mamba2)
__all__ += ["CRF"]  # linear-chain conditional random field (crf)
__all__ += ["ODEBlock"]  # neural ODE layer (ode_block)
__all__ += [  # 4-bit weights and QLoRA (quant4, dense4bit, qlora)
    "Dense4bit", "QuantState", "dequantize_4bit", "prepare_model_for_kbit_training", "quantize_4bit",
    "quantize_model_4bit",
]
__all__ += ["merge_models", "merging"]  # model soups, task arithmetic, TIES, DARE, SLERP, Fisher (merging)
__all__ += [  # inputs of tabular models (tabular)
    "FeatureTokenizer", "PeriodicEmbeddings", "PiecewiseLinearEncoding", "quantile_bins",
]
__all__ += [  # spiking neurons, sequences over time, spike encoders (spiking, spiking_sequence, spikegen)
    "Lapicque", "Leaky", "RLeaky", "SpikingNeuron", "SpikingSequential", "Synaptic", "spikegen",
]
__all__ += ["GradientReversal"]  # domain-adversarial training (gradient_reversal)
__all__ += [  # sets: Deep Sets, Set Transformer blocks, Slot Attention (set_layers, set_attention, slot_attention)
    "DeepSetsPooling", "ISAB", "MAB", "PMA", "PermEquivariant", "SAB", "SlotAttention", "multihead_attention",
]
__all__ += ["FSQ", "MaskedConv2D", "ResidualVQ", "VectorQuantizer", "VectorQuantizerEMA", "causal_mask"]  # VQ, PixelCNN
__all__ += ["LinearAttention", "MultiScaleRetention", "PerformerAttention", "RWKVChannelMix",
            "RWKVTimeMix"]  # linear-time sequence mixers (linear_attention, retention, rwkv)
__all__ += ["DeltaNet", "GatedDeltaNet", "GatedLinearAttention"]  # delta rule, GLA (delta_net, gated_linear_attention)
__all__ += ["PerceptualLoss"]  # perceptual (feature and style) losses (perceptual_loss)
__all__ += ["CapsuleLayer", "DigitCapsules", "PrimaryCapsules", "capsule_lengths"]  # capsule networks (capsules)
__all__ += ["Deemphasis", "Fade", "GriffinLim", "InverseMelScale", "MuLawDecoding", "MuLawEncoding",  # audio synthesis
            "Preemphasis", "Resample"]
__all__ += ["nas"]  # architecture search spaces: DARTS cells, genotypes (nas)
__all__ += [  # embedding losses with learnable class centres (angular_margin)
    "ArcFaceLoss", "CenterLoss", "CombinedMarginLoss", "CosFaceLoss", "NormalizedSoftmaxLoss", "SphereFaceLoss",
    "SubCenterArcFace",
]
__all__ += ["Hopfield", "HopfieldLayer", "HopfieldPooling", "hopfield_retrieval"]  # modern Hopfield layers
__all__ += ["DEQ", "FourierFeatures", "SineLayer", "Siren"]  # implicit layers (deq, implicit_representation)
__all__ += ["HashGridEncoding", "HashGridMLP", "hash_grid_encode"]  # Instant-NGP hash encoding
__all__ += ["compress_model", "compression", "factorize_conv", "factorize_dense", "prune_filters"]  # compression
__all__ += [  # parameter-efficient fine-tuning beyond LoRA (dora, ia3, adapters, loha, prompt_tuning, peft)
    "AdapterConfig", "BottleneckAdapter", "DoRADense", "IA3Config", "IA3Dense", "IA3Scale", "LoHaConfig", "LoHaDense",
    "LoKrConfig", "LoKrDense", "LoraConfig", "PrefixTuningConfig", "PrefixTuningLM", "PromptEncoderConfig",
    "PromptTuningConfig", "PromptTuningLM", "VeRADense", "VeraConfig", "WithAdapter", "adapter_state_dict",
    "apply_bottleneck_adapters", "apply_dora", "apply_ia3", "apply_loha", "apply_lokr", "apply_vera", "get_peft_model",
    "load_adapter", "merge_adapters", "print_trainable_parameters", "save_adapter", "unmerge_adapters",
]
__all__ += ["QuantDense", "awq_quantize", "gptq_quantize", "ptq", "smooth_quant"]  # GPTQ, AWQ, SmoothQuant (ptq)
__all__ += ["FastKANLayer", "KANLinear", "SYMBOLIC_FUNCTIONS", "SymbolicFit", "fit_symbolic"]  # Kolmogorov-Arnold
__all__ += ["HypAct", "HypLinear", "HyperbolicMLR", "ManifoldParameter", "PoincareEmbedding"]  # hyperbolic layers
__all__ += ["HeadOutputs"]  # the per-head hook point of MultiHeadAttention
__all__ += ["GE2ELoss"]  # generalized end-to-end speaker loss (ge2e)
__all__ += ["CentralityEncoding", "GPSLayer", "GraphormerLayer", "HeteroConv", "RGCNConv"]  # graph transformers
__all__ += ["ConditionalBatchNorm", "FiLM", "HyperNetwork", "MixtureOfDepths"]  # conditional computation
__all__ += ["LRU", "MinGRU", "MinLSTM", "S4D", "mLSTM", "sLSTM"]  # recurrent layers (lru, min_rnn, ssm, xlstm)
__all__ += ["RGLRU", "GriffinRecurrentBlock"]  # Griffin's real-gated linear recurrence (rglru)
__all__ += ["GroupBatchNorm", "GroupPool", "P4ConvP4", "P4ConvZ2", "P4MConvP4M",
            "P4MConvZ2"]  # p4 / p4m group-equivariant convolutions (group_conv)
__all__ += ["DifferentialAttention", "HyenaOperator",
            "MultiHeadLatentAttention"]  # sequence mixers (differential_attention, hyena, latent_attention)
__all__ += ["DeformConv2D"]  # deformable convolution (deform_conv)
__all__ += ["DeformableTransformerEncoderLayer",
            "MultiScaleDeformableAttention"]  # multi-scale deformable attention (ms_deform_attn)
__all__ += ["TTTMLP", "TTTLinear"]  # test-time-training sequence mixers (ttt)
__all__ += ["DirichletHead", "NormalInverseGammaHead"]  # evidential output heads (evidential)
__all__ += ["BitLinear", "PackedBitLinear", "absmax_quantize", "absmean_ternary"]  # BitNet b1.58 (bitlinear)
__all__ += ["BoundedSpectralNorm", "RandomFeatureGaussianProcess", "SNGPResMLP",
            "mean_field_logits"]  # spectral-normalized neural Gaussian process (sngp)
__all__ += ["DyT", "replace_norms_with_dyt"]  # normalization-free transformers: Dynamic Tanh (dyt)
__all__ += ["GlobalResponseNorm", "global_response_norm"]  # ConvNeXt V2 global response normalization (grn)
__all__ += ["NoisyDense", "reset_noise"]  # noisy networks for exploration (noisy)
__all__ += ["ScaledStdConv2D", "scaled_standardized_weight"]  # normalizer-free convolution (scaled_std_conv)
__all__ += ["SelfAttention2D"]  # SAGAN / BigGAN self-attention on feature maps (self_attention_2d)
__all__ += ["LSHAttention", "LinformerAttention",
            "NystromAttention"]  # Linformer, Nystromformer, Reformer LSH (efficient_attention)
__all__ += ["LockedDropout", "WeightDrop", "activation_regularization", "embedding_dropout",  # AWD-LSTM
            "temporal_activation_regularization"]
