"""The training workflow: the fit loop, callbacks, metrics, history and checkpoints."""

from lamina.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    TerminateOnNaN,
)
from lamina.train.history import History
from lamina.train.metrics import (
    AUC,
    AveragePrecision,
    EpochMetric,
    F1Score,
    MeanAbsoluteError,
    MeanMetric,
    Precision,
    R2Score,
    Recall,
    accuracy,
    binary_accuracy,
    confusion_matrix,
    mean_absolute_error,
    r2_score,
    top_k_accuracy,
    top_k_error,
)
from lamina.train.trainer import Trainer

__all__ = [
    "CSVLogger", "Callback", "EarlyStopping", "EpochMetric", "F1Score", "History", "LambdaCallback",
    "LearningRateScheduler", "MeanMetric", "ModelCheckpoint", "Precision", "Recall",
    "ProgressBar", "TerminateOnNaN", "Trainer", "accuracy", "binary_accuracy", "confusion_matrix",
    "top_k_accuracy", "top_k_error",
    "AUC", "AveragePrecision", "MeanAbsoluteError", "R2Score", "mean_absolute_error", "r2_score",
]
