"""The synthetic captioning task: rows of scikit-learn's digits captioned with their names
(each glyph checked against the digit it was drawn from), the relation captions and the
vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import load_digits
from lamina.vision import DIGIT_WORDS, digit_caption_vocabulary, digit_captions


def test_digit_captions():
    images, labels = load_digits(size=8)
    picked = (images[:20], labels[:20])
    x, captions = digit_captions(5, 3, digits=picked, scale=2, seed=3)
    assert x.shape == (5, 16, 48, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    for image, caption in zip(x, captions):
        words = caption.split()
        assert len(words) == 3 and all(w in DIGIT_WORDS for w in words)
        glyph = image[::2, 16:32:2, 0]                       # the middle digit, scale undone
        matches = [k for k in range(20) if np.allclose(glyph, picked[0][k, :, :, 0] / 255.0)]
        assert DIGIT_WORDS[int(picked[1][matches[0]])] == words[1]
    _, relations = digit_captions(3, 2, style="relation", seed=1)
    assert all(r.startswith("a ") and " left of a " in r for r in relations)
    vocab = digit_caption_vocabulary()
    assert vocab.decode(vocab.encode(captions[0], add_bos=True, add_eos=True)) == captions[0]
    with pytest.raises(ValueError, match="style='relation' describes two digits"):
        digit_captions(2, 3, style="relation")
