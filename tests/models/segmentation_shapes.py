"""Synthetic segmentation data for the PSPNet and UNet++ tests: noisy 16x16 images, each with a
bright square (class 1) and a bright disc (class 2) of the same brightness on background (class 0),
so that only the shape tells the two classes apart; and a short training loop scored by mIoU."""

import numpy as np

import lamina
from lamina import optim
from lamina.train.segmentation_metrics import mean_iou, pixel_confusion_matrix

SIZE = 16


def _disc_and_square(rng):
    rows, cols = np.mgrid[:SIZE, :SIZE]
    while True:
        side = int(rng.integers(4, 8))
        top, left = rng.integers(0, SIZE - side + 1, 2)
        square = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        radius = rng.uniform(2.5, 4.0)
        cy, cx = rng.uniform(radius - 0.5, SIZE - radius + 0.5, 2)
        disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
        margin = (rows >= top - 1) & (rows <= top + side) & (cols >= left - 1) & (cols <= left + side)
        if not (margin & disc).any():
            return square, disc


def shapes_dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, 16, 16, 1) float32 and their labels (n, 16, 16) int64."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (n, SIZE, SIZE, 1)).astype(np.float32)
    y = np.zeros((n, SIZE, SIZE), dtype=np.int64)
    for i in range(n):
        square, disc = _disc_and_square(rng)
        y[i][square], y[i][disc] = 1, 2
        x[i, ..., 0] += square | disc
    return x, y


def miou(scores, labels) -> float:
    return mean_iou(pixel_confusion_matrix(labels, np.asarray(scores).argmax(axis=-1), 3))


def all_background_miou(labels) -> float:
    """The mIoU of predicting background everywhere: the background's IoU over three classes."""
    return miou(np.eye(3)[np.zeros_like(labels)], labels)


def train_and_score(model, loss_fn, train, test, epochs: int, lr: float, batch_size: int = 32,
                    seed: int = 0) -> float:
    """Adam on shuffled mini-batches for ``epochs``; the test mIoU of the model in eval mode."""
    x, y = train
    lamina.manual_seed(seed)
    model.build((None, *x.shape[1:]))
    optimizer = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(lamina.tensor(x[batch])), y[batch])
            loss.backward()
            optimizer.step()
    x_test, y_test = test
    with lamina.no_grad():
        scores = model.eval()(lamina.tensor(x_test)).numpy()
    return miou(scores, y_test)
