"""LeNet-5 on the full Fashion-MNIST (60,000 training and 10,000 test images).

Uses the same preparation as ``lamina train``: pixels scaled to [0, 1], padded from 28x28
to LeNet-5's 32x32, standardised with training statistics; 6,000 training images are
held out for validation, and the 10,000 test images are used once, at the end.
Prints the configuration, the per-epoch costs, the test accuracy and the wall time.

    python benchmarks/fashion_lenet5.py [--epochs 15] [--activation relu] [--pool max] [--dataset mnist]
                                        [--augment]
"""

from __future__ import annotations

import argparse
import time

import lamina
from lamina import models, nn, optim
from lamina.cli import augmentation_layers
from lamina.optim.schedules import CosineDecay
from lamina.train import Trainer
from lamina.train.recipes import prepare_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "mnist"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--pool", default="max", choices=("avg", "max"))
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", action="store_true",
                        help="train with lamina train --augment's layers (shifts; mirroring or rotations)")
    args = parser.parse_args()

    lamina.manual_seed(args.seed)
    started = time.perf_counter()
    data = prepare_dataset(args.dataset, seed=args.seed, limit=args.limit)
    model = models.lenet5(activation=args.activation, pool=args.pool, input_shape=data.input_shape)
    if args.augment:
        model = nn.Sequential(*augmentation_layers(args.dataset, data.input_shape), *model)
    optimizer = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * -(-len(data.train[0]) // args.batch_size)
    trainer = Trainer(model, "categorical_cross_entropy", optimizer,
                      schedule=CosineDecay(args.lr, steps, optimizer=optimizer), verbose=0)
    print(f"LeNet-5 ({args.activation}, {args.pool} pooling) on {args.dataset}: {len(data.train[0])} training, "
          f"{len(data.val[0])} validation, {len(data.test[0])} test images; Adam lr {args.lr} with cosine decay, "
          f"weight decay {args.weight_decay}, "
          f"batch {args.batch_size}, {args.epochs} epochs" + (", augmented" if args.augment else ""))
    history = trainer.fit(data.train, val=data.val, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    for epoch in range(len(history["loss"])):
        print(f"epoch {epoch + 1:2d}  cost {history['loss'][epoch]:.4f}  val accuracy "
              f"{history['val_accuracy'][epoch]:.4f}  {history['samples_per_s'][epoch]:.0f} samples/s")
    result = trainer.evaluate(data.test)
    print(f"test accuracy {result['accuracy']:.2%}  (test cost {result['loss']:.4f}); "
          f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
