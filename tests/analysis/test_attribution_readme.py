"""The README's attribution example runs and its numbers keep their promises."""

import contextlib
import io
import pathlib
import re

import numpy as np

import lamina
from lamina.analysis.saliency import model_logits

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_attribution_example_runs_and_sums_to_the_score_differences():
    section = README.read_text().split("### Attributions as in Captum and SHAP", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    cnn, images = names["cnn"], names["images"]
    with lamina.no_grad():
        scores = model_logits(cnn, lamina.tensor(images)).data[:, 1]
        reference = model_logits(cnn, lamina.tensor(np.zeros_like(images))).data[:, 1]
    np.testing.assert_allclose(names["contributions"].sum(axis=(1, 2, 3)), scores - reference, rtol=1e-4, atol=1e-5)
    for key in ("guided", "relevance", "shap_values", "lime_weights"):
        assert names[key].shape == images.shape and np.isfinite(names[key]).all(), key
    assert len(np.unique(names["shap_values"][0])) <= 4  # one value per superpixel
