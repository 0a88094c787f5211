"""NeuS: neural implicit surfaces learned by volume rendering (Wang et al. 2021).

A surface is the zero level set of a signed distance function f(x) (:class:`SDFNetwork`, an MLP
that starts as the sphere f(x) = ||x|| - r by the paper's geometric initialisation). Along a ray,
sample points p_0 < ... < p_n are rendered with the unbiased, occlusion-aware opacities

    alpha_i = max((Phi_s(f(p_i)) - Phi_s(f(p_(i+1)))) / Phi_s(f(p_i)), 0),
    Phi_s(x) = sigmoid(s x),   s = exp(10 v)   (v a learnable variance parameter),

transmittance T_i = prod_(j<i) (1 - alpha_j) and weights w_i = T_i alpha_i, so a pixel's colour is
C = sum_i w_i c_i (+ (1 - sum_i w_i) background), c_i coming from :class:`ColorNetwork` at p_i
with the view direction, the normal grad f(p_i) and the SDF network's feature vector. Training
adds the Eikonal loss mean (||grad f|| - 1)^2, which keeps f a distance function. The gradients
of f with respect to the points are taken on the graph (``create_graph``), so both the normals
and the Eikonal loss train the SDF network.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, enable_grad, grad, is_grad_enabled
from lamina.errors import ShapeError
from lamina.nn import Dense
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.parameter import Parameter
from lamina.vision.nerf.encoding import encoding_size, positional_encoding

__all__ = ["ColorNetwork", "NeuS", "SDFNetwork", "eikonal_loss", "level_set_points", "neus_render",
           "neus_train_step", "neus_weights", "surface_chamfer_distance"]

SOFTPLUS_BETA = 100.0


def _dense(units: int, fan_in: int, name: str) -> Dense:
    layer = Dense(units, name=name)
    layer.build((None, fan_in))
    return layer


def _set(param, value: np.ndarray) -> None:
    param.data = backend.xp.asarray(value, dtype=param.dtype)


def _points(x, who: str, width: int = 3) -> Tensor:
    x = as_tensor(x)
    if x.ndim != 2 or x.shape[1] != width:
        raise ShapeError(f"{who}: expected an array of shape (N, {width}), got {tuple(x.shape)}")
    return x


@register_with_arguments
class SDFNetwork(Module):
    """f(x) and a feature vector: (N, 3) points -> (N, 1 + feature_size), column 0 the signed
    distance. ``depth`` hidden layers of ``width`` with softplus (beta = 100) activations on the
    points (encoded with ``pos_freqs`` frequencies when > 0). Geometric initialisation: hidden
    weights N(0, 2 / width), zero biases, output weights N(sqrt(pi / width), 1e-4^2) and output
    bias -``radius``, so that f(x) ~ ||x|| - radius at the start; the encoded (sin/cos) inputs
    start with zero weights."""

    def __init__(self, width: int = 64, depth: int = 3, feature_size: int = 8, radius: float = 0.5,
                 pos_freqs: int = 0, seed: int = 0, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.width, self.depth = positive_int(width, f"{who}: width"), positive_int(depth, f"{who}: depth")
        self.feature_size = int(feature_size)
        if self.feature_size < 0:
            raise ValueError(f"{who}: feature_size must be >= 0, got {feature_size!r}")
        if not radius > 0:
            raise ValueError(f"{who}: radius must be positive, got {radius!r}")
        self.radius, self.pos_freqs = float(radius), int(pos_freqs)
        self.in_features = encoding_size(3, self.pos_freqs) if self.pos_freqs else 3
        fan_in = self.in_features
        for i in range(self.depth):
            setattr(self, f"linear{i}", _dense(self.width, fan_in, f"linear{i}"))
            fan_in = self.width
        self.output_linear = _dense(1 + self.feature_size, self.width, "output_linear")
        self._geometric_init(np.random.default_rng(seed))
        self.built = True

    def _geometric_init(self, rng: np.random.Generator) -> None:
        for i in range(self.depth):
            layer = self._modules[f"linear{i}"]
            weight = rng.normal(0.0, math.sqrt(2.0) / math.sqrt(self.width), size=layer.weight.shape)
            if i == 0:
                weight[3:] = 0.0                     # the sin/cos encodings start switched off
            _set(layer.weight, weight)
            _set(layer.bias, np.zeros(layer.bias.shape))
        out = self.output_linear
        _set(out.weight, rng.normal(math.sqrt(math.pi) / math.sqrt(self.width), 1e-4, size=out.weight.shape))
        _set(out.bias, np.full(out.bias.shape, -self.radius))

    def forward(self, points) -> Tensor:
        h = _points(points, self._label())
        if self.pos_freqs:
            h = positional_encoding(h, self.pos_freqs)
        for i in range(self.depth):
            h = F.softplus(self._modules[f"linear{i}"](h), beta=SOFTPLUS_BETA)
        return self.output_linear(h)

    def sdf(self, points) -> Tensor:
        """f at points (N, 3): (N,)."""
        return self(points)[:, 0]


@register_with_arguments
class ColorNetwork(Module):
    """c(x, d, n, z): the colour (N, 3) in [0, 1] of points x seen along unit directions d, with
    normals n = grad f(x) and SDF features z, from the joined row [x, gamma(d), n, z] through
    ``depth`` ReLU layers of ``width`` and a sigmoid (gamma encodes with ``dir_freqs`` frequencies,
    or is the identity when 0)."""

    def __init__(self, feature_size: int = 8, width: int = 64, depth: int = 2, dir_freqs: int = 0,
                 name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.width, self.depth = positive_int(width, f"{who}: width"), positive_int(depth, f"{who}: depth")
        self.feature_size, self.dir_freqs = int(feature_size), int(dir_freqs)
        fan_in = 6 + (encoding_size(3, self.dir_freqs) if self.dir_freqs else 3) + self.feature_size
        for i in range(self.depth):
            setattr(self, f"linear{i}", _dense(self.width, fan_in, f"linear{i}"))
            fan_in = self.width
        self.output_linear = _dense(3, self.width, "output_linear")
        self.built = True

    def forward(self, points, normals, view_dirs, features) -> Tensor:
        who = self._label()
        points, normals, view_dirs = (_points(a, who) for a in (points, normals, view_dirs))
        features = _points(features, who, self.feature_size)
        if not points.shape[0] == normals.shape[0] == view_dirs.shape[0] == features.shape[0]:
            raise ShapeError(f"{who}: points {tuple(points.shape)}, normals {tuple(normals.shape)}, view "
                             f"directions {tuple(view_dirs.shape)} and features {tuple(features.shape)} "
                             "must have one row per point")
        if self.dir_freqs:
            view_dirs = positional_encoding(view_dirs, self.dir_freqs)
        h = F.concat([points, view_dirs, normals, features], axis=-1)
        for i in range(self.depth):
            h = F.relu(self._modules[f"linear{i}"](h))
        return F.sigmoid(self.output_linear(h))


@register_with_arguments
class NeuS(Module):
    """An :class:`SDFNetwork`, a :class:`ColorNetwork` and the variance parameter v of the
    inverse deviation s = exp(10 v) (module docstring). Calling it on points (N, 3) and unit
    view directions (N, 3) gives (sdf (N,), rgb (N, 3), gradients grad f (N, 3))."""

    def __init__(self, sdf_width: int = 64, sdf_depth: int = 3, feature_size: int = 8, color_width: int = 64,
                 color_depth: int = 2, radius: float = 0.5, init_variance: float = 0.3, pos_freqs: int = 0,
                 dir_freqs: int = 0, seed: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.sdf_network = SDFNetwork(sdf_width, sdf_depth, feature_size, radius, pos_freqs, seed, name="sdf")
        self.color_network = ColorNetwork(feature_size, color_width, color_depth, dir_freqs, name="color")
        self.variance = Parameter(backend.xp.asarray([init_variance], dtype=np.float32), dtype=np.float32)
        self.built = True

    def inv_s(self) -> Tensor:
        """The inverse deviation s = exp(10 v), a tensor of shape (1,)."""
        return F.exp(self.variance * 10.0)

    def sdf_with_gradient(self, points) -> tuple[Tensor, Tensor, Tensor]:
        """(f (N,), features (N, feature_size), grad f (N, 3)) at points (N, 3). With gradients
        enabled, grad f is on the graph (create_graph), so losses on it train the network."""
        raw = points.data if isinstance(points, Tensor) else np.asarray(points)
        if raw.ndim != 2 or raw.shape[1] != 3:
            raise ShapeError(f"{self._label()}.sdf_with_gradient: expected points of shape (N, 3), got {raw.shape}")
        dtype = self.sdf_network.output_linear.weight.dtype
        training = is_grad_enabled()
        with enable_grad():
            x = Tensor(backend.xp.asarray(raw, dtype=dtype), requires_grad=True, dtype=dtype)
            out = self.sdf_network(x)
            sdf = out[:, 0]
            (gradient,) = grad(sdf.sum(), [x], create_graph=training)
        if not training:
            out, gradient = Tensor(out.data, dtype=dtype), Tensor(gradient, dtype=dtype)
            sdf = out[:, 0]
        return sdf, out[:, 1:], gradient

    def forward(self, points, view_dirs) -> tuple[Tensor, Tensor, Tensor]:
        dtype = self.sdf_network.output_linear.weight.dtype
        points, view_dirs = (x if isinstance(x, Tensor) else Tensor(np.asarray(x), dtype=dtype)
                             for x in (points, view_dirs))
        sdf, features, gradient = self.sdf_with_gradient(points)
        rgb = self.color_network(points, gradient, view_dirs, features)
        return sdf, rgb, gradient


def neus_weights(sdf, inv_s, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """(alpha (R, S), weights (R, S)) of rays from the SDF values (R, S + 1) at their S + 1 sorted
    samples and the inverse deviation s (a scalar or shape (1,) tensor):
    alpha_i = max((Phi_s(f_i) - Phi_s(f_(i+1)) + eps) / (Phi_s(f_i) + eps), 0), Phi_s = sigmoid(s .),
    w_i = alpha_i prod_(j<i) (1 - alpha_j). ``eps`` keeps the ratio finite where Phi_s(f_i)
    underflows; alpha stays <= 1, so the weights of a ray sum to at most 1."""
    sdf, inv_s = as_tensor(sdf), as_tensor(inv_s)
    if sdf.ndim != 2 or sdf.shape[1] < 2:
        raise ShapeError(f"neus_weights: expected SDF values of shape (rays, samples + 1) with at least 2 "
                         f"samples, got {tuple(sdf.shape)}")
    if inv_s.size != 1:
        raise ShapeError(f"neus_weights: the inverse deviation must be one number, got shape {tuple(inv_s.shape)}")
    cdf = F.sigmoid(sdf * inv_s.reshape(()))
    prev_cdf, next_cdf = cdf[:, :-1], cdf[:, 1:]
    alpha = F.relu((prev_cdf - next_cdf + eps) / (prev_cdf + eps))
    survive = F.cumprod(1.0 - alpha, axis=1)
    ones = Tensor(backend.xp.ones((sdf.shape[0], 1), dtype=survive.dtype), dtype=survive.dtype)
    transmittance = F.concat([ones, survive[:, :-1]], axis=1)
    return alpha, transmittance * alpha


def eikonal_loss(gradients) -> Tensor:
    """mean (||g|| - 1)^2 over the rows g of ``gradients`` (N, 3) = grad f at N points."""
    g = _points(gradients, "eikonal_loss")
    norm = F.sqrt((g * g).sum(axis=-1) + 1e-12)
    return ((norm - 1.0) ** 2).mean()


def neus_render(model: NeuS, rays_o, rays_d, near: float, far: float, n_samples: int = 32,
                perturb: bool = False, background=None, rng=None) -> dict:
    """Renders rays (R, 3) through ``model`` with ``n_samples`` sections between depths ``near`` and
    ``far`` (evenly spaced; with ``perturb`` each ray's samples shift by one random offset of up to
    half a bin). Returns a dict of 'rgb' (R, 3), 'opacity' (R,) = sum_i w_i, 'depth' (R,) =
    sum_i w_i z_i, 'alpha' and 'weights' (R, n_samples), 'gradients' (R (n_samples + 1), 3) (for
    the Eikonal loss) and 'z_vals' (R, n_samples + 1). With a ``background`` colour (3,), the
    pixel is C + (1 - opacity) background."""
    rays_o, rays_d = np.asarray(rays_o), np.asarray(rays_d)
    if rays_o.ndim != 2 or rays_o.shape[-1] != 3 or rays_o.shape != rays_d.shape:
        raise ShapeError(f"neus_render: expected origins and directions of shape (R, 3), got {rays_o.shape} "
                         f"and {rays_d.shape}")
    if not near < far:
        raise ValueError(f"neus_render: expected near < far, got near={near!r}, far={far!r}")
    n_samples = positive_int(n_samples, "neus_render: n_samples")
    dtype = model.variance.dtype
    rays_o, rays_d = rays_o.astype(dtype), rays_d.astype(dtype)
    rays = rays_o.shape[0]
    z_vals = np.broadcast_to(np.linspace(near, far, n_samples + 1, dtype=dtype), (rays, n_samples + 1)).copy()
    if perturb:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        z_vals = z_vals + (rng.random((rays, 1)).astype(dtype) - 0.5) * (far - near) / n_samples
    points = (rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., None]).reshape(-1, 3)
    unit = rays_d / np.linalg.norm(rays_d, axis=-1, keepdims=True)
    dirs = np.ascontiguousarray(np.broadcast_to(unit[:, None, :], (rays, n_samples + 1, 3)).reshape(-1, 3))
    sdf, rgb, gradients = model(Tensor(points, dtype=dtype), Tensor(dirs, dtype=dtype))
    alpha, weights = neus_weights(sdf.reshape(rays, n_samples + 1), model.inv_s())
    colours = rgb.reshape(rays, n_samples + 1, 3)[:, :-1]
    color = (F.expand_dims(weights, -1) * colours).sum(axis=1)
    opacity = weights.sum(axis=1)
    if background is not None:
        back = Tensor(np.asarray(background, dtype=dtype).reshape(1, 3), dtype=dtype)
        color = color + F.expand_dims(1.0 - opacity, -1) * back
    depth = (weights * Tensor(z_vals[:, :-1], dtype=dtype)).sum(axis=1)
    return {"rgb": color, "opacity": opacity, "depth": depth, "weights": weights, "alpha": alpha,
            "gradients": gradients, "z_vals": z_vals}


def neus_train_step(model: NeuS, optimizer, rays_o, rays_d, target_rgb, near: float, far: float,
                    n_samples: int = 32, eikonal_weight: float = 0.1, background=None, rng=None) -> dict:
    """One optimiser step on L = mean |C(r) - C_target(r)| + eikonal_weight * Eikonal loss (the
    paper's L1 colour loss, points jittered along the rays): returns the floats 'loss',
    'color_loss', 'eikonal' and 's' (the inverse deviation)."""
    target = np.asarray(target_rgb)
    if target.shape != np.shape(rays_o):
        raise ShapeError(f"neus_train_step: expected target colours of shape {np.shape(rays_o)} (one per ray), "
                         f"got {target.shape}")
    optimizer.zero_grad()
    out = neus_render(model, rays_o, rays_d, near, far, n_samples, perturb=True, background=background, rng=rng)
    color_loss = F.abs(out["rgb"] - Tensor(target, dtype=out["rgb"].dtype)).mean()
    eikonal = eikonal_loss(out["gradients"])
    loss = color_loss + eikonal * eikonal_weight
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.item()), "color_loss": float(color_loss.item()), "eikonal": float(eikonal.item()),
            "s": float(model.inv_s().item())}


def level_set_points(sdf_network: SDFNetwork, n_points: int = 512, bound: float = 1.0, steps: int = 6,
                     tolerance: float = 1e-3, rng=None) -> np.ndarray:
    """Points on the zero level set of ``sdf_network`` without a mesh: uniform points in the cube
    [-bound, bound]^3 are moved by Newton steps x <- x - f(x) grad f / ||grad f||^2; those that end
    inside the cube with |f| < ``tolerance`` are returned (M, 3)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    dtype = sdf_network.output_linear.weight.dtype
    x = rng.uniform(-bound, bound, size=(positive_int(n_points, "level_set_points: n_points"), 3)).astype(dtype)
    for step in range(steps + 1):
        with enable_grad():
            leaf = Tensor(x, requires_grad=True, dtype=dtype)
            sdf = sdf_network.sdf(leaf)
            (g,) = grad(sdf.sum(), [leaf])
        f, g = backend.to_numpy(sdf.data), backend.to_numpy(g)
        if step == steps:
            break
        x = x - (f / np.maximum((g * g).sum(-1), 1e-8))[:, None] * g
    keep = (np.abs(f) < tolerance) & (np.abs(x) <= bound).all(-1)
    return x[keep]


def surface_chamfer_distance(points_a, points_b) -> float:
    """The symmetric Chamfer distance of two point sets (M, 3) and (K, 3): the mean over both sets
    of the distance from each point to the nearest point of the other set, halved."""
    a, b = np.asarray(points_a, dtype=np.float64), np.asarray(points_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != 3 or b.shape[1] != 3 or not len(a) or not len(b):
        raise ShapeError(f"surface_chamfer_distance: expected non-empty point sets (M, 3) and (K, 3), "
                         f"got {a.shape} and {b.shape}")
    distances = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0))
    return float(0.5 * (distances.min(axis=1).mean() + distances.min(axis=0).mean()))
