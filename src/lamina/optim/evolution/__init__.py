"""Evolution strategies: black-box minimisation over flat float64 vectors with the ask/tell
interface of pycma and evotorch (``ask()`` a population, ``tell(solutions, fitnesses)``,
lower fitness is better), and the search of a network's weights with them.

CMA-ES (Hansen's tutorial), OpenAI-ES (Salimans et al. 2017), SNES and xNES (natural
evolution strategies), PGPE (Sehnke et al. 2010, with ClipUp)::

    from lamina.optim.evolution import CMAES

    es = CMAES(x0=[1.0] * 10, sigma0=0.5, seed=0)
    result = es.optimize(lambda x: float((x**2).sum()), iterations=1000, target=1e-8)
    result.x, result.f, result.evaluations
"""

from lamina.optim.evolution.base import EvolutionResult, EvolutionStrategy, centered_ranks, nes_utilities
from lamina.optim.evolution.cma_es import CMAES, CMAParameters, cma_parameters
from lamina.optim.evolution.modules import STRATEGIES, evolve_module, make_strategy, module_vector
from lamina.optim.evolution.nes import SNES, XNES
from lamina.optim.evolution.openai_es import OpenAIES, es_gradient
from lamina.optim.evolution.pgpe import PGPE
from lamina.optim.evolution.steppers import AdamStep, ClipUpStep, SGDStep

__all__ = [
    "CMAES", "PGPE", "SNES", "STRATEGIES", "XNES", "AdamStep", "CMAParameters", "ClipUpStep", "EvolutionResult",
    "EvolutionStrategy", "OpenAIES", "SGDStep", "centered_ranks", "cma_parameters", "es_gradient",
    "evolve_module", "make_strategy", "module_vector", "nes_utilities",
]
