"""Model builders: the classic small models and the architecture zoo."""

from lamina.models.classic import lenet5, logistic_regression, mlp

__all__ = ["lenet5", "logistic_regression", "mlp"]
