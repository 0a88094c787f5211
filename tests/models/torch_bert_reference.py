"""A PyTorch BERT written from Hugging Face's BertModel / BertForMaskedLM module names and
formulas (separate query/key/value Linear layers, post-LN blocks, exact GELU, an additive
attention mask, the [CLS] pooler, the MLM head tied to the word embeddings), to check
lamina's BERT against."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-12


def _perturbed(ln: nn.LayerNorm) -> nn.LayerNorm:
    with torch.no_grad():
        ln.weight.add_(torch.randn_like(ln.weight) * 0.2)
        ln.bias.add_(torch.randn_like(ln.bias) * 0.2)
    return ln


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = _perturbed(nn.LayerNorm(hidden, eps=EPS))
        self.register_buffer("position_ids", torch.arange(positions)[None], persistent=True)

    def forward(self, ids, token_type_ids):
        x = (self.word_embeddings(ids) + self.position_embeddings(self.position_ids[:, :ids.shape[1]])
             + self.token_type_embeddings(token_type_ids))
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x, additive_mask):
        n, t, e = x.shape
        d = e // self.heads
        q, k, v = (p(x).view(n, t, self.heads, d).transpose(1, 2) for p in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + additive_mask
        return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, t, e)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = _perturbed(nn.LayerNorm(hidden, eps=EPS))

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class BertAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = BertSelfOutput(hidden)

    def forward(self, x, additive_mask):
        return self.output(self.self(x, additive_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x):
        return F.gelu(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = _perturbed(nn.LayerNorm(hidden, eps=EPS))

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int):
        super().__init__()
        self.attention = BertAttention(hidden, heads)
        self.intermediate = BertIntermediate(hidden, inner)
        self.output = BertOutput(hidden, inner)

    def forward(self, x, additive_mask):
        a = self.attention(x, additive_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, layers: int):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(hidden, heads, inner) for _ in range(layers))

    def forward(self, x, additive_mask):
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class BertModel(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, heads: int, inner: int, positions: int, types: int,
                 add_pooling_layer: bool = True):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, hidden, positions, types)
        self.encoder = BertEncoder(hidden, heads, inner, layers)
        self.pooler = BertPooler(hidden) if add_pooling_layer else None

    def forward(self, ids, token_type_ids, attention_mask):
        x = self.embeddings(ids, token_type_ids)
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        h = self.encoder(x, additive)
        return h, (self.pooler(h) if self.pooler is not None else None)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = _perturbed(nn.LayerNorm(hidden, eps=EPS))

    def forward(self, h):
        return self.LayerNorm(F.gelu(self.dense(h)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, hidden: int, vocab: int, table: nn.Parameter):
        super().__init__()
        self.transform = BertPredictionHeadTransform(hidden)
        self.decoder = nn.Linear(hidden, vocab)
        self.decoder.weight = table
        self.bias = nn.Parameter(torch.randn(vocab) * 0.2)
        self.decoder.bias = self.bias

    def forward(self, h):
        return self.decoder(self.transform(h))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, hidden: int, vocab: int, table: nn.Parameter):
        super().__init__()
        self.predictions = BertLMPredictionHead(hidden, vocab, table)

    def forward(self, h):
        return self.predictions(h)


class BertForMaskedLM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, heads: int, inner: int, positions: int, types: int):
        super().__init__()
        self.bert = BertModel(vocab, hidden, layers, heads, inner, positions, types, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(hidden, vocab, self.bert.embeddings.word_embeddings.weight)

    def forward(self, ids, token_type_ids, attention_mask):
        return self.cls(self.bert(ids, token_type_ids, attention_mask)[0])
