"""Gaussian-process regression: lamina's GaussianProcessRegressor against scikit-learn's.

A noisy sine of n points (1 feature) is fitted by both from the same start, amplitude 1,
length scale 1 and noise 0.1: scikit-learn with ConstantKernel * RBF + WhiteKernel and its
L-BFGS-B, lamina with ScaleKernel(RBF) and a learned noise, L-BFGS with a strong Wolfe line
search (the same model, so the same optimum). Printed per n: the time of one evaluation of
log p(y|X) with its gradient, the time to fit, the log marginal likelihood each reached, the
time to predict the mean and std at 1000 new points (medians of --repeats for the evaluation
and the prediction, one fit each), and the ratios (sklearn time / lamina time: above 1,
lamina is faster).

    python benchmarks/gp_vs_sklearn.py [--sizes 500 2000] [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.gaussian_process import GaussianProcessRegressor as SklearnGP
from sklearn.gaussian_process import kernels as sk

from lamina.models import GaussianProcessRegressor, kernels


def _timed(fn, repeats: int = 1):
    """(the median time of ``repeats`` calls, the last result)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def _data(n: int, rng):
    x = rng.uniform(0, 10, (n, 1))
    y = np.sin(2 * x[:, 0]) + 0.2 * rng.standard_normal(n)
    return x, y, np.linspace(-1, 11, 1000)[:, None]


def run(n: int, steps: int, repeats: int) -> None:
    x, y, x_new = _data(n, np.random.default_rng(n))

    def ours_model():
        return GaussianProcessRegressor(kernels.ScaleKernel(kernels.RBF(1.0), 1.0), noise=0.1)

    def theirs_model(optimizer="fmin_l_bfgs_b"):
        return SklearnGP(sk.ConstantKernel(1.0) * sk.RBF(1.0) + sk.WhiteKernel(0.1), alpha=1e-10,
                         optimizer=optimizer)

    ours = ours_model().fit(x, y, optimizer=None)
    theirs = theirs_model(None).fit(x, y)

    def ours_eval():
        ours.zero_grad()
        ours.log_marginal_likelihood().backward()

    eval_ours, _ = _timed(ours_eval, repeats)
    eval_theirs, _ = _timed(lambda: theirs.log_marginal_likelihood(theirs.kernel_.theta, eval_gradient=True), repeats)

    fit_ours, ours = _timed(lambda: ours_model().fit(x, y, steps=steps, optimizer="lbfgs"))
    fit_theirs, theirs = _timed(lambda: theirs_model().fit(x, y))
    predict_ours, _ = _timed(lambda: ours.predict(x_new, return_std=True), repeats)
    predict_theirs, _ = _timed(lambda: theirs.predict(x_new, return_std=True), repeats)

    print(f"n = {n}")
    print(f"  one log p(y|X) + gradient: lamina {eval_ours:8.3f} s   sklearn {eval_theirs:8.3f} s   "
          f"ratio {eval_theirs / eval_ours:5.2f}")
    print(f"  fit:                       lamina {fit_ours:8.3f} s   sklearn {fit_theirs:8.3f} s   "
          f"ratio {fit_theirs / fit_ours:5.2f}")
    print(f"  log p(y|X) reached:        lamina {ours.log_marginal_likelihood().item():.6f}   "
          f"sklearn {theirs.log_marginal_likelihood_value_:.6f}")
    print(f"  predict mean + std (1000): lamina {predict_ours:8.3f} s   sklearn {predict_theirs:8.3f} s   "
          f"ratio {predict_theirs / predict_ours:5.2f}")
    print(f"  fit + predict:             ratio {(fit_theirs + predict_theirs) / (fit_ours + predict_ours):5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS iterations at most (lamina)")
    parser.add_argument("--repeats", type=int, default=3, help="evaluations and predictions timed (median)")
    args = parser.parse_args()
    for n in args.sizes:
        run(n, args.steps, args.repeats)


if __name__ == "__main__":
    main()
