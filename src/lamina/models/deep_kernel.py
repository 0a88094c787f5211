"""Deep kernel learning (Wilson, Hu, Salakhutdinov & Xing 2016, "Deep kernel learning"): a base
kernel applied to the features of a network,

    k_DKL(x, x') = k_base(g_w(x), g_w(x') | theta),

so that the network's weights w and the kernel's hyperparameters theta are learned together,
end to end, by maximizing the exact log marginal likelihood of
:class:`~lamina.models.GaussianProcessRegressor` (its gradients reach w through the kernel
matrix). A :class:`DeepKernel` is a :class:`~lamina.models.kernels.Kernel`: it goes wherever
one does (``GaussianProcessRegressor(DeepKernel(...))``, :class:`~lamina.models.SVGP`).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.kernels import Kernel
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments

__all__ = ["DeepKernel"]


@register_with_arguments(modules=("base", "network"))
class DeepKernel(Kernel):
    """k(x, x') = base(network(x), network(x')).

    Args:
        base: the kernel on the features (e.g. ``ScaleKernel(RBF())``).
        network: a lamina module mapping rows (n, d) to features (n, p). A network whose layers
            infer their sizes is built for d features on the first call (or by the model
            before fitting), in the base kernel's dtype; one built already is cast to it here.
    """

    def __init__(self, base: Kernel, network: Module):
        super().__init__()
        if not isinstance(base, Kernel):
            raise TypeError(f"DeepKernel: base must be a lamina.models.kernels.Kernel, got {type(base).__name__}")
        if not isinstance(network, Module):
            raise TypeError(f"DeepKernel: network must be a lamina Module, got {type(network).__name__}")
        self.base = base
        self.network = network
        if network.built:                 # as loading rebuilds it: in the default dtype
            network.to(base.dtype)
        self._in_features = None

    def features(self, x: Tensor) -> Tensor:
        """The network's features g_w(x) (n, p) of rows x (n, d)."""
        out = self.network(x)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ShapeError(f"DeepKernel: the network maps inputs of shape {tuple(x.shape)} to shape "
                             f"{tuple(out.shape)}; expected features of shape ({x.shape[0]}, p)")
        return out

    def _check_features(self, d: int) -> None:
        if self._in_features == d:
            return
        dtype = self.base.dtype
        probe = Tensor._wrap(backend.xp.zeros((1, d), dtype=dtype))
        features = self.features(probe)  # builds a lazily sized network
        self.network.to(dtype)
        self.base._check_features(features.shape[1])
        self._in_features = d

    def forward(self, x1: Tensor, x2: Tensor | None) -> Tensor:
        f1 = self.features(x1)
        return self.base(f1, None if x2 is None else self.features(x2))

    def _diag(self, x: Tensor) -> Tensor:
        return self.base.diag(self.features(x))

    def extra_repr(self) -> str:
        return ""
