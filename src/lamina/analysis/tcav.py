"""Testing with concept activation vectors, TCAV (Kim et al., 2018): how much a class
relies on a human-defined concept, given only example inputs of that concept.

* The CAV. Layer l's activations f_l(x), flattened, of the concept's examples (label 1) and
  of random examples (label 0) are split by a linear classifier w . a + b; the concept
  activation vector is the unit normal of its decision boundary on the concept's side,
  v_C = w / ||w||. Its held-out accuracy says whether layer l separates the concept at all.
* The directional derivative of class k's logit h_k along the concept at layer l,

      S_C,k,l(x) = grad_a h_k(a) . v_C,     a = f_l(x),

  is positive when nudging the activation towards the concept raises the class score.
* The TCAV score is the fraction of class-k inputs X_k with a positive S_C,k,l:
  |{x in X_k : S_C,k,l(x) > 0}| / |X_k|.
* The significance test: a CAV is learned against each of several random sets, giving one
  score per run; CAVs learned between two random sets give the scores of a meaningless
  direction. A two-sided t-test (Welch's when ``equal_var=False``) compares the two samples;
  with Bonferroni's correction over m tests the concept is significant when p < alpha / m.

The model runs in evaluation mode with its parameters out of the graph; the hooks these
functions register are removed, and each module's mode restored, before they return.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.analysis.cam import _named_layer, run_to_layer_leaf
from lamina.analysis.saliency import as_input_batch, chosen_scores, input_analysis
from lamina.autograd import is_grad_enabled
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["CAV", "CLASSIFIERS", "TCAVResult", "concept_activation_vector", "directional_derivatives",
           "layer_activations", "layer_gradients", "tcav", "tcav_score"]

CLASSIFIERS = ("logistic", "sgd")


@dataclass(frozen=True)
class CAV:
    """A concept activation vector: ``vector`` (the unit normal, over the flattened
    activation of ``layer``, pointing towards the concept) and the linear classifier's
    ``accuracy`` on the held-out examples (on all of them when none were held out)."""

    vector: np.ndarray
    accuracy: float
    layer: str
    classifier: str


@dataclass(frozen=True)
class TCAVResult:
    """The TCAV scores of one concept, one per random set (``scores``), their ``mean`` and
    ``std``, the scores of random-vs-random CAVs (``random_scores``), the two-sided t-test's
    ``p_value``, ``significant`` (p < alpha / bonferroni) and the ``cavs`` behind ``scores``."""

    scores: np.ndarray
    mean: float
    std: float
    random_scores: np.ndarray
    p_value: float
    significant: bool
    cavs: tuple[CAV, ...]


# -- activations and gradients at a layer ------------------------------------------------------

def _layer_output(model: Module, x, layer, fn: str, gradient: bool, class_index=None):
    """(activation, d sum_i h_(k_i) / d activation or None) of the named layer on ``x``, as
    arrays of the layer's output shape; the caller holds :func:`input_analysis`.

    A forward hook hands the rest of the model a leaf tensor holding the layer's output, so
    that backward stops there."""
    if gradient and not is_grad_enabled():
        raise RuntimeError(f"{fn}: needs gradients, but it was called inside lamina.no_grad()")
    name, module = _named_layer(model, layer, fn)
    activation, logits = run_to_layer_leaf(model, x, name, module, fn, gradient)
    if not gradient:
        return activation.data, None
    if logits.ndim != 2:
        raise ShapeError(f"{fn}: the model's output has shape {logits.shape}; expected (batch, classes)")
    chosen_scores(logits, class_index, "logit", fn).backward()
    grad = activation.grad if activation.grad is not None else backend.xp.zeros_like(activation.data)
    return activation.data, grad


def layer_activations(model: Module, layer: Module | str, inputs) -> np.ndarray:
    """f_l(x) of the sub-module ``layer`` (or its dotted name) for each input, flattened to
    (N, D) as a NumPy array."""
    x = as_input_batch(inputs, "layer_activations")
    with input_analysis(model):
        activation, _ = _layer_output(model, x, layer, "layer_activations", gradient=False)
    return backend.to_numpy(activation).reshape(len(x), -1)


def layer_gradients(model: Module, layer: Module | str, inputs, class_index) -> np.ndarray:
    """grad_a h_k(a) at a = f_l(x) for each input, flattened to (N, D): the gradient of the
    class logit h_k (an int, or one class per input) with respect to the layer's output."""
    x = as_input_batch(inputs, "layer_gradients")
    with input_analysis(model):
        _, grad = _layer_output(model, x, layer, "layer_gradients", gradient=True, class_index=class_index)
    return backend.to_numpy(grad).reshape(len(x), -1)


# -- the concept activation vector -------------------------------------------------------------

def _linear_classifier(classifier, seed: int | None):
    if not isinstance(classifier, str):
        if not (hasattr(classifier, "fit") and hasattr(classifier, "predict")):
            raise TypeError("concept_activation_vector: classifier must be 'logistic', 'sgd' or a scikit-learn "
                            f"linear classifier, got {type(classifier).__name__}")
        return classifier
    if classifier not in CLASSIFIERS:
        raise ValueError(f"concept_activation_vector: classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if classifier == "logistic":
        return LogisticRegression(max_iter=1000, random_state=seed)
    return SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, random_state=seed)


def _held_out(count: int, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the held-out rows among ``count``, at least one, none when the fraction is 0."""
    held = int(round(test_fraction * count))
    return rng.permutation(count)[:max(held, 1)] if test_fraction > 0 else np.zeros(0, dtype=np.intp)


def concept_activation_vector(model: Module, layer: Module | str, concept_inputs, random_inputs,
                              classifier="sgd", seed: int | None = 0, test_fraction: float = 0.2) -> CAV:
    """The CAV of the concept shown by ``concept_inputs`` against ``random_inputs`` at
    ``layer`` (module docstring). ``classifier``: 'sgd' (scikit-learn's SGDClassifier,
    hinge loss, alpha 0.01: fast), 'logistic' (LogisticRegression, L-BFGS: slower on wide
    activations) or an unfitted scikit-learn linear classifier; ``test_fraction`` of each set is held out to measure the
    accuracy (0: accuracy on the training examples). ``seed`` fixes the split and the fit."""
    fn = "concept_activation_vector"
    if not 0 <= test_fraction < 1:
        raise ValueError(f"{fn}: test_fraction must lie in [0, 1), got {test_fraction}")
    concept = layer_activations(model, layer, concept_inputs)
    random = layer_activations(model, layer, random_inputs)
    if len(concept) < 2 or len(random) < 2:
        raise ValueError(f"{fn}: need at least 2 concept and 2 random examples, got {len(concept)} and {len(random)}")
    return _fit_cav(concept, random, _named_layer(model, layer, fn)[0], classifier, seed, test_fraction)


def _fit_cav(concept: np.ndarray, random: np.ndarray, layer: str, classifier, seed: int | None,
             test_fraction: float) -> CAV:
    """The CAV from flattened activations of the concept and of a random set."""
    rng = np.random.default_rng(seed)
    features = np.concatenate([concept, random]).astype(np.float64)
    labels = np.concatenate([np.ones(len(concept), np.intp), np.zeros(len(random), np.intp)])
    held = np.concatenate([_held_out(len(concept), test_fraction, rng),
                           len(concept) + _held_out(len(random), test_fraction, rng)])
    train = np.setdiff1d(np.arange(len(labels)), held)
    test = held if len(held) else train
    model = _linear_classifier(classifier, seed)
    model.fit(features[train], labels[train])
    normal = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
    if list(model.classes_) != [0, 1]:
        raise RuntimeError(f"concept_activation_vector: the classifier's classes are {list(model.classes_)}, "
                           "expected [0, 1]")
    size = np.linalg.norm(normal)
    if size == 0 or not np.isfinite(size):
        raise ValueError(f"concept_activation_vector: the classifier at layer {layer!r} found no direction "
                         f"(normal of norm {size}); the concept and random activations may be identical")
    accuracy = float((model.predict(features[test]) == labels[test]).mean())
    name = classifier if isinstance(classifier, str) else type(classifier).__name__
    return CAV(normal / size, accuracy, layer, name)


# -- directional derivatives and scores --------------------------------------------------------

def _vector(cav, size: int, fn: str) -> np.ndarray:
    vector = np.asarray(cav.vector if isinstance(cav, CAV) else cav, dtype=np.float64).reshape(-1)
    if vector.size != size:
        raise ShapeError(f"{fn}: the CAV has {vector.size} entries, the layer's flattened activation {size}")
    return vector


def directional_derivatives(model: Module, layer: Module | str, inputs, class_index, cav) -> np.ndarray:
    """S_C,k,l(x) = grad_a h_k(a) . v_C at a = f_l(x), one per input (shape (N,));
    ``cav`` is a :class:`CAV` or a vector over the flattened activation."""
    grads = layer_gradients(model, layer, inputs, class_index)
    return grads.astype(np.float64) @ _vector(cav, grads.shape[1], "directional_derivatives")


def _positive_fraction(derivatives: np.ndarray) -> float:
    return float((derivatives > 0).mean())


def tcav_score(model: Module, layer: Module | str, inputs, class_index, cav) -> float:
    """The fraction of ``inputs`` (examples of class ``class_index``) whose directional
    derivative along ``cav`` is positive."""
    return _positive_fraction(directional_derivatives(model, layer, inputs, class_index, cav))


def _two_sided_p_value(scores: np.ndarray, random_scores: np.ndarray, equal_var: bool) -> float:
    """scipy.stats.ttest_ind's p-value; when both samples are constant (no variance) it is
    1 for equal values and 0 otherwise."""
    from scipy.stats import ttest_ind

    if np.ptp(scores) == 0 and np.ptp(random_scores) == 0:
        return 1.0 if scores[0] == random_scores[0] else 0.0
    with warnings.catch_warnings():
        # scipy warns of lost precision for a constant sample, whose variance is still exactly 0
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return float(ttest_ind(scores, random_scores, equal_var=equal_var).pvalue)


def tcav(model: Module, layer: Module | str, concept_inputs, random_sets: Sequence, inputs, class_index,
         classifier="sgd", seed: int | None = 0, test_fraction: float = 0.2, alpha: float = 0.05,
         bonferroni: int = 1, random_counterpart=None, equal_var: bool = True) -> TCAVResult:
    """TCAV of one concept for class ``class_index`` at ``layer``, with the significance test.

    Run i learns a CAV of ``concept_inputs`` against ``random_sets[i]`` and scores
    ``inputs`` on it. The null runs learn CAVs of a random set against the others:
    ``random_counterpart`` (one more random set) against each of ``random_sets``, or, when it
    is None, ``random_sets[i]`` against ``random_sets[(i + 1) % n]``. The p-value is
    scipy.stats.ttest_ind's two-sided one (``equal_var`` as there); ``bonferroni`` is the
    number of tests m run together (concepts x layers), and the concept is significant when
    p < alpha / m."""
    fn = "tcav"
    if len(random_sets) < 2:
        raise ValueError(f"{fn}: need at least 2 random sets for the t-test, got {len(random_sets)}")
    if isinstance(bonferroni, bool) or not isinstance(bonferroni, int) or bonferroni < 1:
        raise ValueError(f"{fn}: bonferroni must be a positive int (the number of tests), got {bonferroni!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"{fn}: alpha must lie in (0, 1), got {alpha}")
    name = _named_layer(model, layer, fn)[0]
    concept = layer_activations(model, name, concept_inputs)
    randoms = [layer_activations(model, name, inputs_) for inputs_ in random_sets]
    grads = layer_gradients(model, name, inputs, class_index).astype(np.float64)

    def run(positive: np.ndarray, negative: np.ndarray, run_seed) -> tuple[float, CAV]:
        cav = _fit_cav(positive, negative, name, classifier, run_seed, test_fraction)
        return _positive_fraction(grads @ cav.vector), cav

    seeds = [None if seed is None else seed + i for i in range(len(randoms))]
    runs = [run(concept, random, seeds[i]) for i, random in enumerate(randoms)]
    if random_counterpart is None:
        null = [run(random, randoms[(i + 1) % len(randoms)], seeds[i])[0] for i, random in enumerate(randoms)]
    else:
        counterpart = layer_activations(model, name, random_counterpart)
        null = [run(counterpart, random, seeds[i])[0] for i, random in enumerate(randoms)]
    scores = np.array([score for score, _ in runs])
    random_scores = np.array(null)
    p_value = _two_sided_p_value(scores, random_scores, equal_var)
    return TCAVResult(scores, float(scores.mean()), float(scores.std()), random_scores, p_value,
                      bool(p_value < alpha / bonferroni), tuple(cav for _, cav in runs))
