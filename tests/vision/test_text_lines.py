"""Label conversion for CTC recognisers, synthetic digit lines and their batching."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.text import ctc_greedy_decode
from lamina.vision import CharsetMapper, TextLineDataset, collate_text_lines, synthetic_text_lines


def test_charset_mapper_round_trip_and_blank_position():
    mapper = CharsetMapper("abc")
    ids, lengths = mapper.encode(["cab", "a", ""])
    assert ids.tolist() == [[3, 1, 2], [1, 0, 0], [0, 0, 0]] and lengths.tolist() == [3, 1, 0]
    assert mapper.num_classes == 4 and [mapper.decode(row[:n]) for row, n in zip(ids, lengths)] == ["cab", "a", ""]
    last = CharsetMapper("abc", blank=3)
    assert last.encode(["cab"])[0].tolist() == [[2, 0, 1]] and last.decode([2, 3, 0]) == "ca"


def test_greedy_decoding_collapses_repeats_and_drops_blanks():
    mapper = CharsetMapper("0123456789")
    path = [0, 2, 2, 0, 2, 3, 3, 3, 0, 0, 1]           # "1", "1" again after a blank, "2", then "0"
    scores = np.full((len(path), 11), -5.0)
    scores[np.arange(len(path)), path] = 0.0
    assert mapper.decode(ctc_greedy_decode(scores)) == "1120"


def test_charset_mapper_errors():
    with pytest.raises(ValueError, match=r"CharsetMapper.encode: text 1 \('1x2'\).*\['x'\]"):
        CharsetMapper("0123456789").encode(["12", "1x2"])
    with pytest.raises(ValueError, match=r"more than once"):
        CharsetMapper("abca")
    with pytest.raises(ValueError, match=r"blank must be an int in \[0, 3\]"):
        CharsetMapper("abc", blank=4)
    with pytest.raises(ValueError, match="id 7 is outside"):
        CharsetMapper("abc").decode([7])


def test_synthetic_lines_hold_their_digits_in_order():
    # solid glyphs, glyph k of grey level 20 (k + 1) and label k: each digit reads back as a run of
    # 16 columns of its level, the runs apart by the gaps of at least one blank column
    levels = 20 * np.arange(1, 11)
    glyphs = np.broadcast_to(levels[:, None, None], (10, 8, 8)).astype(np.uint8)
    lines, texts = synthetic_text_lines(6, (glyphs, np.arange(10)), length_range=(2, 4), spacing_range=(1, 3),
                                        height=20, scale=2, noise=0.0, seed=3)
    assert len(lines) == len(texts) == 6
    for line, text in zip(lines, texts):
        assert line.dtype == np.float32 and line.shape[0] == 20 and line.shape[2] == 1
        assert 2 <= len(text) <= 4 and text.isdigit()
        assert 16 * len(text) + (len(text) + 1) <= line.shape[1] <= 16 * len(text) + 3 * (len(text) + 1)
        ink = line[..., 0].max(axis=0)
        starts = np.flatnonzero((ink > 0) & (np.concatenate([[0.0], ink[:-1]]) == 0))
        assert all((ink[s:s + 16] == ink[s]).all() and (line[..., 0][:, s:s + 16] > 0).sum(axis=0).tolist()
                   == [16] * 16 for s in starts)
        read = "".join(str(int(np.argmin(abs(levels - ink[s] * 255)))) for s in starts)
        assert read == text


def test_noise_seed_and_errors():
    a, ta = synthetic_text_lines(3, seed=1)
    b, tb = synthetic_text_lines(3, seed=1)
    assert ta == tb and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(0.0 <= x.min() and x.max() <= 1.0 for x in a)
    with pytest.raises(ValueError, match="synthetic_text_lines: length_range"):
        synthetic_text_lines(2, length_range=(3, 1))
    with pytest.raises(ValueError, match="height >= 8 \\* scale"):
        synthetic_text_lines(2, height=12, scale=2)


def test_dataset_and_collate_keep_widths():
    lines, texts = synthetic_text_lines(4, length_range=(1, 5), height=8, scale=1, seed=0)
    dataset = TextLineDataset(lines, texts)
    assert len(dataset) == 4 and dataset[2][1] == texts[2]
    batch, widths, got = collate_text_lines([dataset[k] for k in range(4)])
    assert got == texts and widths.tolist() == [line.shape[1] for line in lines]
    assert batch.shape == (4, 8, max(widths), 1)
    for n, line in enumerate(lines):
        assert np.array_equal(batch[n, :, :widths[n]], line) and not batch[n, :, widths[n]:].any()
    with pytest.raises(ValueError, match="collate_text_lines: images must be"):
        collate_text_lines([(np.zeros((8, 5, 1)), "1"), (np.zeros((10, 5, 1)), "2")])
    with pytest.raises(ValueError, match="TextLineDataset: got 2 images and 1 texts"):
        TextLineDataset(lines[:2], texts[:1])
