"""Exceptions raised across lamina."""


class ShapeError(ValueError):
    """An op or layer was given operands whose shapes do not fit together."""


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree in :func:`lamina.gradcheck`."""
