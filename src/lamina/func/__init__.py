"""torch.func's names over lamina's transforms: ``grad``, ``grad_and_value``, ``vjp``, ``jvp``,
``jacrev``, ``jacfwd``, ``hessian``, ``vmap``, ``functional_call`` and ``stack_module_state``.

``grad(f)`` is a function (where :func:`lamina.autograd.grad` takes tensors already computed);
the transforms compose, so ``vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)`` gives
per-sample gradients. ``vmap`` is a loop over the samples (see :mod:`lamina.func.vmap`) and
``jacfwd`` is computed by reverse mode (see :mod:`lamina.func.transforms`).
"""

from lamina.func.modules import functional_call, stack_module_state
from lamina.func.transforms import grad, grad_and_value, hessian, jacfwd, jacrev, jvp, vjp
from lamina.func.vmap import vmap

__all__ = ["functional_call", "grad", "grad_and_value", "hessian", "jacfwd", "jacrev", "jvp", "stack_module_state",
           "vjp", "vmap"]
