"""HyenaOperator, MultiHeadLatentAttention and DifferentialAttention each learn, in a one-layer
model, to copy the token seen four steps earlier (beyond the Hyena's short filter, so its long
convolution must carry it), far above the 1 / 8 of chance; each survives lamina.save and
lamina.load; the README example runs and prints what its comments say."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import nn, optim

VOCAB, STEPS, LAG = 8, 12, 4


def _batch(rng, n):
    ids = rng.integers(0, VOCAB, (n, STEPS))
    target = np.full((n, STEPS), -100)               # nothing to copy in the first LAG steps
    target[:, LAG:] = ids[:, :-LAG]
    return ids, target


class _OneLayer(nn.Module):
    def __init__(self, mixer):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.mixer = mixer
        self.head = nn.Dense(VOCAB)

    def forward(self, ids):
        x = self.embed(lamina.tensor(ids))
        return self.head(x + self.mixer(x))


MIXERS = {
    "hyena": lambda: nn.HyenaOperator(16, l_max=STEPS, filter_order=16),
    "latent": lambda: nn.MultiHeadLatentAttention(16, 2, kv_lora_rank=8, qk_rope_head_dim=4),
    "differential": lambda: nn.DifferentialAttention(16, 2, rotary=True),
}


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_learns_to_copy_a_token_four_steps_back(mixer):
    rng = np.random.default_rng(0)
    model = _OneLayer(MIXERS[mixer]())
    model(_batch(rng, 2)[0])
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        ids, target = _batch(rng, 32)
        loss = F.cross_entropy(model(ids), lamina.tensor(target))
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids, target = _batch(rng, 256)
    with lamina.no_grad():
        accuracy = (model(ids).numpy().argmax(-1)[:, LAG:] == target[:, LAG:]).mean()
    assert accuracy > 0.8, f"{mixer}: copy accuracy {accuracy:.3f} (chance 0.125)"


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_save_and_load_round_trip(mixer, tmp_path):
    layer = MIXERS[mixer]()
    x = np.random.default_rng(1).standard_normal((2, 6, 16)).astype(np.float32)
    lamina.save(layer, tmp_path / "mixer.safetensors")
    twin = lamina.load(tmp_path / "mixer.safetensors")
    assert type(twin) is type(layer) and twin.get_config() == layer.get_config()
    with lamina.no_grad():
        np.testing.assert_array_equal(twin(x).numpy(), layer(x).numpy())


def test_readme_example():
    printed, names = run_readme_section("Hyena, latent and differential attention")
    lines = printed.splitlines()
    assert lines == ["(2, 16, 32) (2, 16, 32)", "(2, 16, 12)", "True", "(2, 16, 32) 0.4707"]
    assert names["mla"].cache is None
