"""A PyTorch WhisperForConditionalGeneration and Whisper's log-mel front end, written from the
published formulas with Hugging Face's module names, so that its state_dict has Hugging Face's
keys (transformers is not installed in the test environment)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def slaney_mel_filters(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None):
    """The Slaney-normalised filters (n_mels, 1 + n_fft // 2) on the Slaney mel scale, in NumPy:
    linear below 1 kHz (200/3 Hz per mel), logarithmic above (log(6.4) / 27 per mel)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    linear_step, break_hz = 200.0 / 3, 1000.0
    break_mel, log_step = break_hz / linear_step, math.log(6.4) / 27.0

    def to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < break_hz, f / linear_step, break_mel + np.log(np.maximum(f, 1e-300) / break_hz) / log_step)

    def to_hz(m):
        return np.where(m < break_mel, m * linear_step, break_hz * np.exp(log_step * (m - break_mel)))

    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = to_hz(np.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2))
    filters = np.zeros((n_mels, len(bin_hz)))
    for m in range(n_mels):
        low, centre, high = edges[m], edges[m + 1], edges[m + 2]
        up = (bin_hz - low) / (centre - low)
        down = (high - bin_hz) / (high - centre)
        filters[m] = np.maximum(0.0, np.minimum(up, down)) * 2.0 / (high - low)
    return filters


def log_mel_spectrogram(audio, n_mels=80):
    """Whisper's features of ``audio`` (..., samples), a float64 torch tensor."""
    window = torch.hann_window(400, dtype=audio.dtype)
    stft = torch.stft(audio, 400, 160, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = torch.from_numpy(slaney_mel_filters(16000, 400, n_mels)).to(audio.dtype)
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


def sinusoids(length, channels, max_timescale=10000):
    increment = np.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float64))
    scaled = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([scaled.sin(), scaled.cos()], dim=1)


class WhisperAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, kv=None, causal=False):
        kv = x if kv is None else kv
        n, t, d = x.shape

        def split(y):
            return y.view(n, -1, self.heads, self.head_dim).transpose(1, 2)
        q = split(self.q_proj(x) * self.head_dim ** -0.5)
        k, v = split(self.k_proj(kv)), split(self.v_proj(kv))
        scores = q @ k.transpose(-1, -2)
        if causal:
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        out = scores.softmax(-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(n, t, d))


class WhisperEncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.self_attn = WhisperAttention(d, c["encoder_attention_heads"])
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, c["encoder_ffn_dim"])
        self.fc2 = nn.Linear(c["encoder_ffn_dim"], d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x):
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.self_attn = WhisperAttention(d, c["decoder_attention_heads"])
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = WhisperAttention(d, c["decoder_attention_heads"])
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, c["decoder_ffn_dim"])
        self.fc2 = nn.Linear(c["decoder_ffn_dim"], d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x, enc):
        x = x + self.self_attn(self.self_attn_layer_norm(x), causal=True)
        x = x + self.encoder_attn(self.encoder_attn_layer_norm(x), enc)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.conv1 = nn.Conv1d(c["num_mel_bins"], d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(c["max_source_positions"], d)
        self.embed_positions.requires_grad_(False)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(c["max_source_positions"], d))
        self.layers = nn.ModuleList([WhisperEncoderLayer(c) for _ in range(c["encoder_layers"])])
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, features):
        x = nn.functional.gelu(self.conv2(nn.functional.gelu(self.conv1(features)))).permute(0, 2, 1)
        x = x + self.embed_positions.weight[:x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class WhisperDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.embed_tokens = nn.Embedding(c["vocab_size"], d, c["pad_token_id"])
        self.embed_positions = nn.Embedding(c["max_target_positions"], d)
        self.layers = nn.ModuleList([WhisperDecoderLayer(c) for _ in range(c["decoder_layers"])])
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, ids, enc):
        x = self.embed_tokens(ids) + self.embed_positions.weight[:ids.shape[1]]
        for layer in self.layers:
            x = layer(x, enc)
        return self.layer_norm(x)


class WhisperModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.encoder = WhisperEncoder(c)
        self.decoder = WhisperDecoder(c)


class WhisperForConditionalGeneration(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = WhisperModel(c)
        self.proj_out = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        self.proj_out.weight = self.model.decoder.embed_tokens.weight
        for module in self.modules():           # randomise the biases and norms too
            for name, param in module.named_parameters(recurse=False):
                if param.requires_grad and name == "bias" or isinstance(module, nn.LayerNorm):
                    with torch.no_grad():
                        param.add_(0.1 * torch.randn_like(param))

    def shift_right(self, labels):
        shifted = labels.new_full(labels.shape, self.c["decoder_start_token_id"])
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, self.c["pad_token_id"])

    def forward(self, input_features, labels):
        encoded = self.model.encoder(input_features)
        logits = self.proj_out(self.model.decoder(self.shift_right(labels), encoded))
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100)
        return encoded, logits, loss
