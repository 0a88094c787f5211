"""Torch re-implementations of PointNet, PointNet++ and DGCNN written from the papers' equations,
run on the weights ``p`` (name -> torch tensor) and running statistics of a lamina model, for
the point-cloud model tests."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF


def perturb(model, seed: int, scale: float = 0.3) -> None:
    """Random weights (the T-Nets' last layers move off zero, batch-norm scales stay near one)."""
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        if ".norm." in name:
            param.data[...] = (1.0 if name.endswith("weight") else 0.0) + rng.normal(0, scale, param.shape)
        else:
            param.data[...] += rng.normal(0, scale, param.shape)


class TorchPointModels:
    """The reference layers on one lamina model's parameters and (copied) batch-norm statistics."""

    def __init__(self, model, p: dict, training: bool):
        self.p, self.training = p, training
        self.running = {name: torch.tensor(np.array(value)) for name, value in model.named_buffers()}

    def norm(self, prefix: str, x):
        flat = x.reshape(-1, x.shape[-1])
        y = TF.batch_norm(flat, self.running[prefix + ".running_mean"], self.running[prefix + ".running_var"],
                          self.p[prefix + ".weight"], self.p[prefix + ".bias"], self.training, 0.1, 1e-5)
        return y.reshape(x.shape)

    def dense(self, prefix: str, x):
        y = x @ self.p[prefix + ".weight"]
        bias = self.p.get(prefix + ".bias")
        return y if bias is None else y + bias

    def mlp(self, prefix: str, x, count: int, leaky: bool = False):
        for i in range(count):
            x = self.norm(f"{prefix}.norm.{i}", self.dense(f"{prefix}.dense.{i}", x))
            x = TF.leaky_relu(x, 0.2) if leaky else torch.relu(x)
        return x

    # -- PointNet --------------------------------------------------------------------------
    def tnet(self, prefix: str, x, widths: int, head: int):
        g = self.mlp(prefix + ".mlp", x, widths).max(dim=1)[0]
        flat = self.dense(prefix + ".transform", self.mlp(prefix + ".head", g, head))
        k = x.shape[2]
        return flat.reshape(-1, k, k) + torch.eye(k, dtype=x.dtype)

    def pointnet_features(self, x, local: int, glob: int, tnet: tuple[int, int], transforms=(True, True)):
        if transforms[0]:
            x = x @ self.tnet("features.input_tnet", x, *tnet)
        h = self.mlp("features.local_mlp", x, local)
        a = None
        if transforms[1]:
            a = self.tnet("features.feature_tnet", h, *tnet)
            h = h @ a
        return h, self.mlp("features.global_mlp", h, glob).max(dim=1)[0], a

    def pointnet(self, x, local: int, glob: int, head: int, tnet: tuple[int, int]):
        _, g, a = self.pointnet_features(x, local, glob, tnet)
        return self.dense("classifier", self.mlp("head", g, head)), a

    def pointnet_segmentation(self, x, local: int, glob: int, seg: int, tnet: tuple[int, int]):
        h, g, _ = self.pointnet_features(x, local, glob, tnet)
        joined = torch.cat([h, g[:, None, :].expand(-1, h.shape[1], -1)], dim=-1)
        return self.dense("classifier", self.mlp("seg_mlp", joined, seg))

    # -- DGCNN -----------------------------------------------------------------------------
    @staticmethod
    def knn(x, k: int):
        inner = x @ x.transpose(1, 2)
        square = (x * x).sum(-1, keepdim=True)
        return (2 * inner - square - square.transpose(1, 2)).topk(k, dim=-1)[1]

    def edge_conv(self, prefix: str, x, k: int, layers: int = 1):
        """EdgeConv on the parameters named ``prefix + 'mlp...'``."""
        idx = self.knn(x.detach(), k)
        b, n, c = x.shape
        neighbours = torch.gather(x, 1, idx.reshape(b, n * k, 1).expand(-1, -1, c)).reshape(b, n, k, c)
        centre = x[:, :, None, :].expand(-1, -1, k, -1)
        edges = torch.cat([neighbours - centre, centre], dim=-1)
        return self.mlp(prefix + "mlp", edges, layers, leaky=True).max(dim=2)[0]

    def dgcnn(self, x, k: int, convs: int, head: int):
        outputs = []
        for i in range(convs):
            x = self.edge_conv(f"edge_convs.{i}.", x, k)
            outputs.append(x)
        h = self.mlp("embedding", torch.cat(outputs, dim=-1), 1, leaky=True)
        h = torch.cat([h.max(dim=1)[0], h.mean(dim=1)], dim=-1)
        for i in range(head):
            h = self.mlp(f"head.{i}", h, 1, leaky=True)
        return self.dense("classifier", h)


def fit_clouds(model, x, y, epochs: int, lr: float = 3e-3, batch_size: int = 25, loss_fn=None) -> None:
    """The learning tests' loop: Adam on shuffled mini-batches (seeded), each batch's cost
    ``loss_fn(model, x_batch, y_batch)`` (cross-entropy of ``model(x_batch)`` by default);
    the model is left in evaluation mode."""
    import lamina

    optimizer = lamina.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        for first in range(0, len(x), batch_size):
            rows = order[first:first + batch_size]
            optimizer.zero_grad()
            if loss_fn is None:
                loss = lamina.functional.cross_entropy(model(x[rows]), y[rows])
            else:
                loss = loss_fn(model, x[rows], y[rows])
            loss.backward()
            optimizer.step()
    model.eval()
