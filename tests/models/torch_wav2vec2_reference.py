"""A PyTorch Wav2Vec2ForCTC written from the paper's and Hugging Face's description with Hugging
Face's module names, so that its state_dict has Hugging Face's keys (transformers is not
installed in the test environment). ``config`` is a dict with Wav2Vec2Config's field names."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F


def output_lengths(lengths, config):
    for k, s in zip(config["conv_kernel"], config["conv_stride"]):
        lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
    return lengths


class ConvLayer(nn.Module):
    def __init__(self, c_in, c_out, k, s, bias, norm):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, k, stride=s, bias=bias)
        self.norm = norm
        if norm == "group":
            self.layer_norm = nn.GroupNorm(c_out, c_out, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(c_out)

    def forward(self, x):                                   # (N, C, L)
        x = self.conv(x)
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        dims = [1, *config["conv_dim"]]
        layer_norm = config["feat_extract_norm"] == "layer"
        self.conv_layers = nn.ModuleList([
            ConvLayer(dims[i], dims[i + 1], k, s, config["conv_bias"],
                      "layer" if layer_norm else ("group" if i == 0 else None))
            for i, (k, s) in enumerate(zip(config["conv_kernel"], config["conv_stride"]))])

    def forward(self, audio):
        x = audio[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2)


class FeatureProjection(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config["conv_dim"][-1], eps=config["layer_norm_eps"])
        self.projection = nn.Linear(config["conv_dim"][-1], config["hidden_size"])

    def forward(self, x):
        return self.projection(self.layer_norm(x))


class PositionalConvEmbedding(nn.Module):
    def __init__(self, config, parametrizations=False):
        super().__init__()
        k, d = config["num_conv_pos_embeddings"], config["hidden_size"]
        self.conv = nn.Conv1d(d, d, k, padding=k // 2, groups=config["num_conv_pos_embedding_groups"])
        if parametrizations:
            self.conv = nn.utils.parametrizations.weight_norm(self.conv, name="weight", dim=2)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.conv = nn.utils.weight_norm(self.conv, name="weight", dim=2)
        self.remove = 1 if k % 2 == 0 else 0

    def forward(self, x):                                   # (N, T, C)
        y = self.conv(x.transpose(1, 2))
        if self.remove:
            y = y[:, :, :-self.remove]
        return F.gelu(y).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x, mask=None):
        n, t, d = x.shape

        def split(y):
            return y.view(n, t, self.heads, self.head_dim).transpose(1, 2)
        q = split(self.q_proj(x) * self.head_dim ** -0.5)
        scores = q @ split(self.k_proj(x)).transpose(-1, -2)
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(-1) @ split(self.v_proj(x))
        return self.out_proj(out.transpose(1, 2).reshape(n, t, d))


class FeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.intermediate_dense = nn.Linear(config["hidden_size"], config["intermediate_size"])
        self.output_dense = nn.Linear(config["intermediate_size"], config["hidden_size"])

    def forward(self, x):
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        d, eps = config["hidden_size"], config["layer_norm_eps"]
        self.stable = config["do_stable_layer_norm"]
        self.attention = Attention(d, config["num_attention_heads"])
        self.layer_norm = nn.LayerNorm(d, eps=eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, h, mask=None):
        if self.stable:
            h = h + self.attention(self.layer_norm(h), mask)
            return h + self.feed_forward(self.final_layer_norm(h))
        h = self.layer_norm(h + self.attention(h, mask))
        return self.final_layer_norm(h + self.feed_forward(h))


class Encoder(nn.Module):
    def __init__(self, config, parametrizations=False):
        super().__init__()
        self.stable = config["do_stable_layer_norm"]
        self.pos_conv_embed = PositionalConvEmbedding(config, parametrizations)
        self.layer_norm = nn.LayerNorm(config["hidden_size"], eps=config["layer_norm_eps"])
        self.layers = nn.ModuleList([EncoderLayer(config) for _ in range(config["num_hidden_layers"])])

    def forward(self, h, frames_mask=None):
        additive = None
        if frames_mask is not None:
            h = h.masked_fill(~frames_mask[:, :, None], 0.0)
            additive = (1.0 - frames_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        h = h + self.pos_conv_embed(h)
        if not self.stable:
            h = self.layer_norm(h)
        for layer in self.layers:
            h = layer(h, additive)
        return self.layer_norm(h) if self.stable else h


class Wav2Vec2Model(nn.Module):
    def __init__(self, config, parametrizations=False):
        super().__init__()
        self.config = config
        self.masked_spec_embed = nn.Parameter(torch.rand(config["hidden_size"]))
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        self.encoder = Encoder(config, parametrizations)

    def forward(self, audio, attention_mask=None):
        features = self.feature_extractor(audio)
        frames_mask = None
        if attention_mask is not None:
            lengths = output_lengths(attention_mask.sum(-1), self.config)
            frames_mask = torch.arange(features.shape[1])[None, :] < lengths[:, None]
        return self.encoder(self.feature_projection(features), frames_mask)


class Wav2Vec2ForCTC(nn.Module):
    def __init__(self, config, parametrizations=False):
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config, parametrizations)
        self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"])

    def forward(self, audio, attention_mask=None, labels=None):
        """Logits, and with ``labels`` (padded with -100) HF's CTC loss ('sum', blank = pad id)."""
        logits = self.lm_head(self.wav2vec2(audio, attention_mask))
        if labels is None:
            return logits
        mask = attention_mask if attention_mask is not None else torch.ones(audio.shape, dtype=torch.long)
        lengths = output_lengths(mask.sum(-1), self.config)
        kept = labels >= 0
        log_probs = F.log_softmax(logits, dim=-1).transpose(0, 1)
        loss = F.ctc_loss(log_probs, labels.masked_select(kept), lengths, kept.sum(-1),
                          blank=self.config.get("pad_token_id", 0), reduction="sum")
        return logits, loss
