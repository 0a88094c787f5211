"""A PyTorch CLIP written from Hugging Face's CLIPModel's module names and formulas (separate
q/k/v projections with biases, pre-LN encoder layers, quick_gelu, a bias-free patch
convolution on NCHW images, the text pooled at the highest id, bias-free projections and the
symmetric contrastive loss), to check lamina's CLIP against."""

from __future__ import annotations

import math

import torch
from torch import nn


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _randomize(module: nn.Module, generator: torch.Generator) -> None:
    """Every parameter N(0, 0.2^2) (LayerNorm scales 1 + that), so no test leans on zero biases."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.2
            p.copy_(noise + 1.0 if "norm" in name and name.endswith("weight") else noise)


class CLIPAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x, additive_mask=None):
        n, t, e = x.shape
        d = e // self.num_heads
        q, k, v = (proj(x).view(n, t, self.num_heads, d).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        scores = (q * d ** -0.5) @ k.transpose(-1, -2)
        if additive_mask is not None:
            scores = scores + additive_mask
        out = torch.softmax(scores, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(n, t, e))


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": nn.functional.gelu}


class CLIPMLP(nn.Module):
    def __init__(self, hidden: int, inner: int, hidden_act: str = "quick_gelu"):
        super().__init__()
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)
        self.activation = ACTIVATIONS[hidden_act]

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float, hidden_act: str = "quick_gelu"):
        super().__init__()
        self.self_attn = CLIPAttention(hidden, heads)
        self.layer_norm1 = nn.LayerNorm(hidden, eps=eps)
        self.mlp = CLIPMLP(hidden, inner, hidden_act)
        self.layer_norm2 = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, additive_mask=None):
        x = x + self.self_attn(self.layer_norm1(x), additive_mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.layers = nn.ModuleList([
            CLIPEncoderLayer(config["hidden_size"], config["num_attention_heads"], config["intermediate_size"],
                             config.get("layer_norm_eps", 1e-5), config.get("hidden_act", "quick_gelu"))
            for _ in range(config["num_hidden_layers"])])

    def forward(self, x, additive_mask=None):
        for layer in self.layers:
            x = layer(x, additive_mask)
        return x


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        e, p = config["hidden_size"], config["patch_size"]
        self.class_embedding = nn.Parameter(torch.randn(e))
        self.patch_embedding = nn.Conv2d(config.get("num_channels", 3), e, kernel_size=p, stride=p, bias=False)
        self.num_positions = (config["image_size"] // p) ** 2 + 1
        self.position_embedding = nn.Embedding(self.num_positions, e)
        self.register_buffer("position_ids", torch.arange(self.num_positions).expand((1, -1)), persistent=True)

    def forward(self, pixel_values):                          # NCHW
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(self.position_ids)


class CLIPVisionTransformer(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        e, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-5)
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(e, eps=eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = nn.LayerNorm(e, eps=eps)

    def forward(self, pixel_values):
        z = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return z, self.post_layernorm(z[:, 0, :])


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        e = config["hidden_size"]
        self.token_embedding = nn.Embedding(config["vocab_size"], e)
        self.position_embedding = nn.Embedding(config["max_position_embeddings"], e)
        self.register_buffer("position_ids", torch.arange(config["max_position_embeddings"]).expand((1, -1)),
                             persistent=True)

    def forward(self, input_ids):
        t = input_ids.shape[-1]
        return self.token_embedding(input_ids) + self.position_embedding(self.position_ids[:, :t])


class CLIPTextTransformer(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config["hidden_size"], eps=config.get("layer_norm_eps", 1e-5))

    def forward(self, input_ids, attention_mask=None):
        h = self.embeddings(input_ids)
        n, t = input_ids.shape
        lowest = torch.finfo(h.dtype).min
        mask = torch.triu(torch.full((t, t), lowest, dtype=h.dtype), diagonal=1)[None, None]
        if attention_mask is not None:
            mask = mask + (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * lowest
        h = self.final_layer_norm(self.encoder(h, mask))
        pooled = h[torch.arange(n), input_ids.to(torch.int).argmax(dim=-1)]
        return h, pooled


class CLIPModel(nn.Module):
    def __init__(self, text_config: dict, vision_config: dict, projection_dim: int, seed: int = 0):
        super().__init__()
        self.text_model = CLIPTextTransformer(text_config)
        self.vision_model = CLIPVisionTransformer(vision_config)
        self.visual_projection = nn.Linear(vision_config["hidden_size"], projection_dim, bias=False)
        self.text_projection = nn.Linear(text_config["hidden_size"], projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        _randomize(self, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1 / 0.07) + 0.1)

    def get_image_features(self, pixel_values):
        return self.visual_projection(self.vision_model(pixel_values)[1])

    def get_text_features(self, input_ids, attention_mask=None):
        return self.text_projection(self.text_model(input_ids, attention_mask)[1])

    def forward(self, pixel_values, input_ids, attention_mask=None):
        image_embeds = self.get_image_features(pixel_values)
        text_embeds = self.get_text_features(input_ids, attention_mask)
        image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = text_embeds @ image_embeds.t() * self.logit_scale.exp()
        logits_per_image = logits_per_text.t()
        target = torch.arange(logits_per_text.shape[0])
        loss = (nn.functional.cross_entropy(logits_per_text, target)
                + nn.functional.cross_entropy(logits_per_image, target)) / 2
        return logits_per_image, logits_per_text, loss
