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
from lamina.train.epoch_metric import EpochMetric, MeanMetric
from lamina.train.history import History
from lamina.train.metrics import (
    F1Score,
    Precision,
    Recall,
    accuracy,
    binary_accuracy,
    confusion_matrix,
    top_k_accuracy,
    top_k_error,
)
from lamina.train.score_metrics import AUC, AveragePrecision, MeanAbsoluteError, R2Score, mean_absolute_error, r2_score
from lamina.train.trainer import Trainer

__all__ = [
    "AUC", "AveragePrecision", "CSVLogger", "Callback", "EarlyStopping", "EpochMetric", "F1Score", "History",
    "LambdaCallback", "LearningRateScheduler", "MeanAbsoluteError", "MeanMetric", "ModelCheckpoint", "Precision",
    "ProgressBar", "R2Score", "Recall", "TerminateOnNaN", "Trainer", "accuracy", "binary_accuracy",
    "confusion_matrix", "mean_absolute_error", "r2_score", "top_k_accuracy", "top_k_error",
]
