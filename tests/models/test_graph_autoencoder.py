"""GAE / VGAE: losses against torch re-implementations of PyTorch Geometric's formulas, the
link metrics against scikit-learn, and link prediction learned on a community graph."""

import pathlib
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score as sk_average_precision
from sklearn.metrics import roc_auc_score as sk_roc_auc

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.data import negative_sampling, to_undirected, train_test_split_edges
from lamina.models import GAE, VGAE, InnerProductDecoder
from lamina.models.graph_autoencoder import average_precision_score, roc_auc_score

POS = np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
NEG = np.array([[0, 0, 1, 2], [2, 3, 4, 4]])


def torch_recon_loss(z, pos=POS, neg=NEG):
    def score(edges):
        return torch.sigmoid((z[torch.from_numpy(edges[0])] * z[torch.from_numpy(edges[1])]).sum(-1))
    return -torch.log(score(pos) + 1e-15).mean() - torch.log(1 - score(neg) + 1e-15).mean()


def test_recon_loss_matches_torch():
    model = GAE(nn.Identity())
    ours = lambda z: model.recon_loss(z, POS, NEG)  # noqa: E731
    compare_with_torch(ours, torch_recon_loss, randn(5, 3, seed=1), dtype=np.float64)
    assert check_gradients(ours, randn(5, 3, seed=1))


def test_recon_loss_draws_negatives_that_are_not_edges():
    z = lamina.tensor(randn(5, 3, seed=2), dtype=np.float64)
    model = GAE(nn.Identity())
    drawn = negative_sampling(POS, 5, seed=7)
    np.testing.assert_allclose(model.recon_loss(z, POS, seed=7).item(), torch_recon_loss(torch.tensor(z.numpy()),
                               neg=drawn).item(), rtol=1e-12)


def test_kl_loss_matches_torch_and_evaluation_uses_the_mean():
    def torch_kl(mu, logstd):
        logstd = logstd.clamp(max=10)
        return -0.5 * torch.mean(torch.sum(1 + 2 * logstd - mu ** 2 - logstd.exp() ** 2, dim=1))

    model = VGAE(nn.Identity())
    logstd = randn(6, 2, seed=2)
    logstd[0, 0] = 12.0                                                # clamped at 10
    compare_with_torch(lambda mu, s: model.kl_loss(mu, s), torch_kl, randn(6, 2, seed=1), logstd, dtype=np.float64)

    class Encoder(nn.Module):
        def forward(self, x):
            return x[:, :2], x[:, 2:]

    vgae = VGAE(Encoder())
    x = lamina.tensor(randn(6, 4, seed=3), dtype=np.float64)
    vgae.eval()
    np.testing.assert_array_equal(vgae.encode(x).numpy(), x.numpy()[:, :2])
    np.testing.assert_allclose(vgae.kl_loss().item(), torch_kl(torch.tensor(x.numpy()[:, :2]),
                                                              torch.tensor(x.numpy()[:, 2:])).item(), rtol=1e-12)
    vgae.train()
    lamina.manual_seed(0)
    noisy = np.stack([vgae.encode(x).numpy() for _ in range(400)])
    np.testing.assert_allclose(noisy.mean(0), x.numpy()[:, :2], atol=4 * np.exp(x.numpy()[:, 2:]).max() / 20)
    np.testing.assert_allclose(noisy.std(0), np.exp(x.numpy()[:, 2:]), rtol=0.15)


def test_decoder_scores_pairs_and_all_pairs():
    z = lamina.tensor(randn(4, 3, seed=4), dtype=np.float64)
    decoder = InnerProductDecoder()
    rows = z.numpy()
    np.testing.assert_allclose(decoder(z, POS[:, :3], sigmoid=False).numpy(),
                               (rows[POS[0, :3]] * rows[POS[1, :3]]).sum(1), rtol=1e-12)
    np.testing.assert_allclose(decoder.forward_all(z).numpy(), 1 / (1 + np.exp(-rows @ rows.T)), rtol=1e-12)
    with pytest.raises(ValueError, match="InnerProductDecoder.*out of range"):
        decoder(z, POS)


@pytest.mark.parametrize("seed", range(3))
def test_auc_and_average_precision_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40) + 0.3 * labels, 1)              # with ties
    assert roc_auc_score(labels, scores) == pytest.approx(sk_roc_auc(labels, scores), abs=1e-12)
    assert average_precision_score(labels, scores) == pytest.approx(sk_average_precision(labels, scores), abs=1e-12)


def _communities(rng, count=8, size=10, p_in=0.6, p_out=0.002):
    """A block model: a random pair inside a community is linked with p_in, across with
    p_out. Held-out negatives mostly join two communities and held-out edges mostly stay
    inside one, so telling communities apart gives an AUC near 1."""
    labels = np.repeat(np.arange(count), size)
    p = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    upper = np.triu(rng.random((count * size, count * size)) < p, k=1)
    return to_undirected(np.stack(np.nonzero(upper)), count * size)[0]


class Encoder(nn.Module):
    def __init__(self, variational=False):
        super().__init__()
        self.variational = variational
        self.hidden, self.mu, self.logstd = nn.GCNConv(16), nn.GCNConv(8), nn.GCNConv(8)

    def forward(self, x, edge_index):
        h = F.relu(self.hidden(x, edge_index))
        mu = self.mu(h, edge_index)
        return (mu, self.logstd(h, edge_index)) if self.variational else mu


@pytest.mark.parametrize("variational", [False, True])
def test_autoencoders_predict_held_out_links_of_a_community_graph(variational):
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 80
    split = train_test_split_edges(_communities(rng), n, val_ratio=0.05, test_ratio=0.15, seed=0)
    x = lamina.tensor(np.eye(n), dtype=np.float32)
    model = (VGAE if variational else GAE)(Encoder(variational))
    train = split.train_pos_edge_index
    model.encode(x, train)
    opt = optim.Adam(model.parameters(), lr=0.02)
    for step in range(100):
        opt.zero_grad()
        z = model.encode(x, train)
        loss = model.recon_loss(z, train, seed=step)
        if variational:
            loss = loss + model.kl_loss() / n
        loss.backward()
        opt.step()
    model.eval()
    auc, ap = model.test(model.encode(x, train), split.test_pos_edge_index, split.test_neg_edge_index)
    assert auc > 0.85 and ap > 0.75, (auc, ap)


def test_readme_link_prediction_example_runs_and_predicts_links():
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("### Link prediction, hierarchical pooling, node2vec", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    exec(compile(code, str(readme), "exec"), names)
    assert names["auc"] > 0.85 and names["ap"] > 0.75, (names["auc"], names["ap"])
