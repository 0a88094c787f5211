r"""Domain-adversarial training of neural networks (DANN, Ganin et al. 2016).

Labelled source samples (x_s, y_s) and unlabelled target samples x_t, from a shifted
distribution, share a feature extractor G_f. A label classifier G_y learns from the source
labels; a domain classifier G_d learns to tell source features (domain 0) from target
features (domain 1) through a gradient reversal layer, so that G_f receives the opposite of
the domain gradient and learns features the domain classifier cannot separate:

    min over G_f, G_y   max over G_d   L_y(G_y(G_f(x_s)), y_s) - lambda L_d(G_d(G_f(x)), d),

computed as one minimisation of L_y + L_d with the reversal multiplying G_f's share of
dL_d by -lambda. lambda rises from 0 to 1 over training as 2 / (1 + exp(-gamma p)) - 1, p the
fraction of training done (gamma = 10), which keeps the noisy domain signal away from the
features early on.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional.loss import categorical_cross_entropy
from lamina.functional.shape import concat
from lamina.nn.gradient_reversal import GradientReversal
from lamina.nn.module import Module, as_tensor
from lamina.optim import Optimizer

__all__ = ["DANN", "dann_lambda", "train_dann"]


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """lambda_p = 2 / (1 + exp(-gamma p)) - 1 for training progress p in [0, 1]."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"dann_lambda: progress must be in [0, 1], got {progress!r}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DANN(Module):
    """G_y(G_f(x)) as the model's output; :meth:`losses` gives the two DANN costs.

    ``features`` (G_f), ``classifier`` (G_y, class logits) and ``discriminator`` (G_d, two
    logits: source, target) are modules; ``lambda_`` is the reversal's starting factor
    (``model.reversal.lambda_``, set by :func:`train_dann` at each step)."""

    def __init__(self, features: Module, classifier: Module, discriminator: Module, lambda_: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.features = features
        self.classifier = classifier
        self.discriminator = discriminator
        self.reversal = GradientReversal(lambda_)

    def forward(self, x) -> Tensor:
        return self.classifier(self.features(x))

    def domain_logits(self, x) -> Tensor:
        """G_d(reversal(G_f(x))): the domain classifier's two logits."""
        return self.discriminator(self.reversal(self.features(x)))

    def losses(self, source_x, source_y, target_x) -> tuple[Tensor, Tensor]:
        """(L_y, L_d): the cross-entropy of the source labels, and that of the domain labels
        (0 for the n source, 1 for the m target samples) over all n + m, with one feature pass
        over both batches joined."""
        source_x, target_x = as_tensor(source_x), as_tensor(target_x)
        n, m = source_x.shape[0], target_x.shape[0]
        features = self.features(concat([source_x, target_x], axis=0))
        class_loss = categorical_cross_entropy(self.classifier(features[:n]), source_y, from_logits=True)
        domains = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(m, dtype=np.int64)])
        domain_loss = categorical_cross_entropy(self.discriminator(self.reversal(features)), domains,
                                                from_logits=True)
        return class_loss, domain_loss


def train_dann(model: DANN, source, target_x, optimizer: Optimizer, epochs: int = 1, batch_size: int = 32,
               adapt: bool = True, gamma: float = 10.0, seed: int = 0) -> dict[str, list[float]]:
    """Train ``model`` on the labelled ``source`` (x, y) and the unlabelled ``target_x``:
    each step takes a shuffled source mini-batch and a target mini-batch of the same size,
    minimises L_y + L_d with lambda = :func:`dann_lambda` of the progress, and steps
    ``optimizer``. ``adapt=False`` trains on the source alone (L_y only), the usual baseline.
    Returns the mean ``class_loss`` and ``domain_loss`` of every epoch and the final
    ``lambda``."""
    for label, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"train_dann: {label} must be a positive integer, got {value!r}")
    source_x, source_y = np.asarray(source[0]), np.asarray(source[1])
    target_x = np.asarray(target_x)
    if len(source_x) != len(source_y) or len(source_x) == 0 or len(target_x) == 0:
        raise ValueError(f"train_dann: needs source samples with one label each and target samples, got "
                         f"{len(source_x)} inputs, {len(source_y)} labels, {len(target_x)} target inputs")
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(source_x) / batch_size)
    total_steps, step = epochs * steps_per_epoch, 0
    history: dict[str, list[float]] = {"class_loss": [], "domain_loss": [], "lambda": []}
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(source_x))
        class_total = domain_total = 0.0
        for start in range(0, len(source_x), batch_size):
            rows = order[start:start + batch_size]
            model.reversal.lambda_ = dann_lambda(step / total_steps, gamma) if adapt else 0.0
            optimizer.zero_grad()
            xs = backend.xp.asarray(source_x[rows])
            if adapt:
                picked = rng.choice(len(target_x), len(rows), replace=len(rows) > len(target_x))
                xt = backend.xp.asarray(target_x[picked])
                class_loss, domain_loss = model.losses(xs, source_y[rows], xt)
                (class_loss + domain_loss).backward()
                domain_total += float(domain_loss.item()) * len(rows)
            else:
                class_loss = categorical_cross_entropy(model(as_tensor(xs)), source_y[rows], from_logits=True)
                class_loss.backward()
            optimizer.step()
            class_total += float(class_loss.item()) * len(rows)
            step += 1
        history["class_loss"].append(class_total / len(source_x))
        history["domain_loss"].append(domain_total / len(source_x) if adapt else float("nan"))
    history["lambda"].append(model.reversal.lambda_)
    return history
