"""Physics-informed learning: networks trained with the laws they must obey.

* PINNs (Raissi et al. 2019): :func:`derivative`, :func:`gradient` and :func:`laplacian` of a
  network's output with respect to its inputs; :class:`PINN` fits a network (:func:`mlp_network`)
  to a :class:`PDEProblem` (:class:`Poisson1D`, :class:`Heat1D`, :class:`Burgers1D`) with Adam
  then L-BFGS; :func:`relative_l2_error` scores it against an exact solution.
* :class:`DeepONet` (Lu et al. 2021): operator learning with a branch and a trunk net;
  :func:`antiderivative_data` for G(u)(y) = int_0^y u.
* :class:`HamiltonianNN` (Greydanus et al. 2019) and :class:`LagrangianNN` (Cranmer et al.
  2020): dynamics from a learned H(q, p) or L(q, q') (:func:`hamiltonian_vector_field`,
  :func:`lagrangian_acceleration` for any H or L); :func:`leapfrog` (:func:`stormer_verlet`) and
  :func:`symplectic_euler` integrate them (:mod:`lamina.models.physics.integrators`).
"""

from lamina.models.physics.deeponet import DeepONet, antiderivative_data
from lamina.models.physics.derivatives import derivative, gradient, laplacian
from lamina.models.physics.hamiltonian import HamiltonianNN, hamiltonian_vector_field
from lamina.models.physics.integrators import leapfrog, stormer_verlet, symplectic_euler
from lamina.models.physics.lagrangian import LagrangianNN, lagrangian_acceleration
from lamina.models.physics.pinn import PINN, PINNLoss, mlp_network, relative_l2_error
from lamina.models.physics.problems import Burgers1D, Heat1D, PDEProblem, Poisson1D

__all__ = [
    "PINN", "Burgers1D", "DeepONet", "HamiltonianNN", "Heat1D", "LagrangianNN", "PDEProblem", "PINNLoss",
    "Poisson1D", "antiderivative_data", "derivative", "gradient", "hamiltonian_vector_field", "lagrangian_acceleration",
    "laplacian", "leapfrog", "mlp_network", "relative_l2_error", "stormer_verlet", "symplectic_euler",
]
