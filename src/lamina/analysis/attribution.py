"""Gradient attributions with modified back propagation (as Captum's InputXGradient,
GuidedBackprop, Deconvolution and GuidedGradCam).

With S_c the class score (the model's pre-softmax output z_c):

* input x gradient: A = x * dS_c/dx, the first-order share of each input in S_c;
* guided backprop (Springenberg et al., 2015): dS_c/dx with every ReLU passing back only
  positive gradients where its input was positive, dy [z > 0] [dy > 0];
* deconvnet (Zeiler & Fergus, 2014): every ReLU passes back max(dy, 0), its forward mask
  ignored;
* guided Grad-CAM (Selvaraju et al., 2017): guided backprop times the Grad-CAM map of a
  convolutional layer (upsampled to the image, in [0, 1]), channel by channel.

The ReLU rules are set on lamina's ReLU op for the backward pass only
(:mod:`lamina.analysis.backward_rules`) and are undone before the functions return, also when
they raise. Inputs: a batch with any rank from 2 (tabular rows, NHWC images);
``target``: None (each sample's predicted class), an int or one class per sample.
"""

from __future__ import annotations

from lamina import backend
from lamina.analysis.backward_rules import relu_backward_rule
from lamina.analysis.cam import grad_cam
from lamina.analysis.saliency import _class_score_gradient, _predicted, as_input_batch, input_analysis
from lamina.nn.module import Module

__all__ = ["deconvnet", "guided_backprop", "guided_grad_cam", "input_x_gradient"]


def input_x_gradient(model: Module, x, target=None):
    """A = x * dS_c/dx, the shape of ``x``."""
    x = as_input_batch(x, "input_x_gradient")
    with input_analysis(model):
        return x * _class_score_gradient(model, x, target, "logit", "input_x_gradient")


def _ruled_gradient(model: Module, x, target, rule: str, fn: str):
    x = as_input_batch(x, fn)
    with input_analysis(model):
        chosen = _predicted(model, x, target, fn)
        with relu_backward_rule(rule):
            return _class_score_gradient(model, x, chosen, "logit", fn)


def guided_backprop(model: Module, x, target=None):
    """dS_c/dx back-propagated with each ReLU passing dy [z > 0] [dy > 0]; the shape of ``x``."""
    return _ruled_gradient(model, x, target, "guided", "guided_backprop")


def deconvnet(model: Module, x, target=None):
    """dS_c/dx back-propagated with each ReLU passing max(dy, 0); the shape of ``x``."""
    return _ruled_gradient(model, x, target, "deconvnet", "deconvnet")


def guided_grad_cam(model: Module, x, target=None, layer: Module | str | None = None):
    """guided_backprop(x) * grad_cam(x)[..., None] for NHWC images: (N, H, W, C). ``layer``
    as :func:`lamina.analysis.grad_cam` (by default the last layer with a 4-D output)."""
    x = as_input_batch(x, "guided_grad_cam", ndim=(4,))
    with input_analysis(model):
        chosen = _predicted(model, x, target, "guided_grad_cam")
    guided = guided_backprop(model, x, chosen)
    cam = grad_cam(model, x, chosen, layer=layer)
    return guided * backend.xp.asarray(cam, dtype=x.dtype)[..., None]
