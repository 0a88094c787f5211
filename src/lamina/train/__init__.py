"""The training workflow: the fit loop, callbacks, metrics, history and checkpoints."""

from lamina.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    TerminateOnNaN,
)
from lamina.train.history import History
from lamina.train.metrics import (
    EpochMetric,
    F1Score,
    MeanMetric,
    Precision,
    Recall,
    accuracy,
    binary_accuracy,
    confusion_matrix,
    top_k_accuracy,
    top_k_error,
)
from lamina.train.trainer import Trainer

__all__ = [
    "CSVLogger", "Callback", "EarlyStopping", "EpochMetric", "F1Score", "History", "LearningRateScheduler",
    "MeanMetric", "ModelCheckpoint", "Precision", "Recall",
    "ProgressBar", "TerminateOnNaN", "Trainer", "accuracy", "binary_accuracy", "confusion_matrix",
    "top_k_accuracy", "top_k_error",
]
