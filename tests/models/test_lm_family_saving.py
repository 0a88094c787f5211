"""The Llama-like families and GPT-NeoX save and load with their configs and weights."""

from __future__ import annotations

import numpy as np
import pytest

from lamina import models, saving


@pytest.mark.parametrize("name", ["qwen2", "gemma", "gemma2", "phi3", "gpt_neox", "mixtral"])
def test_a_saved_model_loads_with_its_weights(tmp_path, name):
    model = models.get_model(name, hidden_size=32, intermediate_size=48, num_hidden_layers=1)
    model.eval()
    ids = np.array([[1, 2, 3]])
    expected = model(ids).numpy()
    saving.save(model, tmp_path / "model.lamina")
    loaded = saving.load(tmp_path / "model.lamina")
    loaded.eval()
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(ids).numpy(), expected)
