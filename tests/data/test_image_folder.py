"""ImageFolder and ImageFiles: classes and indices, Pillow decoding to uint8 HWC, RGB / L
conversion, clear errors, and batches through the DataLoader with and without workers."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lamina.data import (
    DataLoader,
    ImageFiles,
    ImageFolder,
    UnreadableImageError,
    find_classes,
    read_image,
)
from lamina.data import transforms as T


def _save(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def _random_rgb(rng, h=9, w=11):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """root/{cat, dog, emu}/ with 2, 3 and 1 PNG images (one in a nested folder) and a text file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "animals"
    for name, count in (("dog", 3), ("cat", 2), ("emu", 1)):
        for k in range(count):
            _save(root / name / f"{k}.png", _random_rgb(rng, 9 + k, 11))
    _save(root / "cat" / "nested" / "deep.PNG", _random_rgb(rng))
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_classes_are_sorted_subfolders_and_samples_carry_their_index(folder):
    dataset = ImageFolder(folder)
    assert dataset.classes == ["cat", "dog", "emu"]
    assert dataset.class_to_idx == {"cat": 0, "dog": 1, "emu": 2}
    assert find_classes(folder) == (dataset.classes, dataset.class_to_idx)
    names = [(Path(path).relative_to(folder).as_posix(), y) for path, y in dataset.samples]
    assert names == [("cat/0.png", 0), ("cat/1.png", 0), ("cat/nested/deep.PNG", 0),
                     ("dog/0.png", 1), ("dog/1.png", 1), ("dog/2.png", 1), ("emu/0.png", 2)]
    assert dataset.targets == [0, 0, 0, 1, 1, 1, 2] and len(dataset) == 7


def test_a_sample_is_the_decoded_uint8_image_and_its_label(folder):
    dataset = ImageFolder(folder)
    x, y = dataset[4]
    with Image.open(folder / "dog" / "1.png") as image:
        expected = np.asarray(image)
    assert x.dtype == np.uint8 and x.shape == (10, 11, 3) and y == 1
    np.testing.assert_array_equal(x, expected)


def test_transforms_apply_to_images_and_targets(folder):
    dataset = ImageFolder(folder, transform=T.Compose([T.Resize((4, 5)), T.ToFloat()]),
                          target_transform=lambda y: 10 + y)
    x, y = dataset[6]
    assert x.shape == (4, 5, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y == 12


def test_is_valid_file_and_extensions_choose_the_files(folder):
    only_zero = ImageFolder(folder, extensions=None, is_valid_file=lambda p: p.endswith("0.png"))
    assert [y for _, y in only_zero.samples] == [0, 1, 2]
    with pytest.raises(ValueError, match="either extensions or is_valid_file"):
        ImageFolder(folder, is_valid_file=lambda p: True)


def test_grey_and_palette_images_become_rgb_or_stay_grey(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _save(tmp_path / "g" / "grey.png", grey)
    palette = Image.fromarray(np.stack([grey, grey[::-1], 255 - grey], axis=-1)).convert("P")
    palette.save(tmp_path / "g" / "palette.png")
    rgba = np.dstack([np.stack([grey] * 3, axis=-1), np.full((3, 4), 128, np.uint8)])
    _save(tmp_path / "g" / "rgba.png", rgba)

    rgb = read_image(tmp_path / "g" / "grey.png")
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb, np.stack([grey] * 3, axis=-1))
    np.testing.assert_array_equal(read_image(tmp_path / "g" / "grey.png", mode="L")[..., 0], grey)
    np.testing.assert_array_equal(read_image(tmp_path / "g" / "palette.png"), np.asarray(palette.convert("RGB")))
    assert read_image(tmp_path / "g" / "rgba.png").shape == (3, 4, 3)

    dataset = ImageFolder(tmp_path, mode="L")
    assert all(dataset[i][0].shape == (3, 4, 1) for i in range(len(dataset)))
    with pytest.raises(ValueError, match="mode must be one of"):
        ImageFolder(tmp_path, mode="CMYK")


def test_jpeg_files_are_read(tmp_path):
    pixels = np.full((8, 8, 3), (200, 40, 90), np.uint8)
    _save(tmp_path / "a" / "x.jpg", pixels, quality=95)
    x, y = ImageFolder(tmp_path)[0]
    assert x.shape == (8, 8, 3) and y == 0
    assert np.abs(x.astype(int) - pixels).max() <= 3   # JPEG is lossy


def test_empty_root_and_empty_class_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no class subfolders") as caught:
        ImageFolder(tmp_path)
    assert str(tmp_path) in str(caught.value)
    (tmp_path / "full").mkdir()
    _save(tmp_path / "full" / "a.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"\['empty'\]"):
        ImageFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolder(tmp_path / "missing")


def test_a_file_that_cannot_be_decoded_is_named(tmp_path):
    _save(tmp_path / "a" / "good.png", np.zeros((2, 2, 3), np.uint8))
    broken = tmp_path / "a" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = ImageFolder(tmp_path)
    with pytest.raises(UnreadableImageError, match="broken.png"):
        dataset[0]
    with pytest.raises(UnreadableImageError, match=r"DataLoader worker \d failed.*broken.png"):
        list(DataLoader(dataset, batch_size=2, shuffle=False, num_workers=2))


def test_image_files_with_and_without_labels(folder):
    paths = [folder / "dog" / "0.png", folder / "emu" / "0.png"]
    labelled = ImageFiles(paths, labels=[5, 7])
    x, y = labelled[1]
    np.testing.assert_array_equal(x, read_image(paths[1]))
    assert y == 7
    unlabelled = ImageFiles(paths, transform=T.CenterCrop(4), loader=lambda p: read_image(p, "L"))
    assert unlabelled[0].shape == (4, 4, 1)
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        ImageFiles(paths, labels=[0])
    assert "ImageFiles(2 images" in repr(labelled)


def _loader(folder, num_workers, seed=3, shuffle=True):
    transform = T.Compose([T.RandomResizedCrop((6, 6), scale=(0.3, 1.0)), T.RandomHorizontalFlip(),
                           T.ToFloat(), T.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])])
    return DataLoader(ImageFolder(folder, transform=transform), batch_size=3, shuffle=shuffle, seed=seed,
                      num_workers=num_workers)


def test_loader_yields_nhwc_float_batches_and_integer_labels(folder):
    batches = list(_loader(folder, num_workers=2))
    assert [len(yb) for _, yb in batches] == [3, 3, 1]
    for xb, yb in batches:
        assert xb.shape == (len(yb), 6, 6, 3) and xb.dtype == np.float32
        assert np.issubdtype(yb.dtype, np.integer)
    assert sorted(np.concatenate([yb for _, yb in batches]).tolist()) == [0, 0, 0, 1, 1, 1, 2]


def test_random_transforms_are_reproducible_and_the_same_with_workers(folder):
    serial = list(_loader(folder, num_workers=0))
    threaded = list(_loader(folder, num_workers=2))
    again = list(_loader(folder, num_workers=2))
    for (x0, y0), (x2, y2), (x3, y3) in zip(serial, threaded, again):
        np.testing.assert_array_equal(x0, x2)
        np.testing.assert_array_equal(x2, x3)
        np.testing.assert_array_equal(y0, y2)
        np.testing.assert_array_equal(y2, y3)


def test_each_epoch_draws_new_augmentations(folder):
    loader = _loader(folder, num_workers=2, shuffle=False)
    first, second = list(loader), list(loader)
    for (_, y1), (_, y2) in zip(first, second):
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second))
