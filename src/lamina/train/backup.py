"""``BackupAndRestore``: resume a ``fit`` that was interrupted, from where it stopped.

Keras's callback of that name: at the end of every epoch a training checkpoint (see
:mod:`lamina.train.checkpoint`: weights, optimizer, schedule, loader position, random
states, history, callbacks' states) is written to a backup directory; a ``fit`` started
with a backup there resumes from it, at the epoch after the one saved. When training
finishes (``on_train_end``, early stopping included) the backup is deleted, so the next
``fit`` starts afresh; an exception or an interrupt leaves it in place.
"""

from __future__ import annotations

import os

from lamina.train.callbacks import Callback, main_process_only

__all__ = ["BackupAndRestore"]

BACKUP_NAME = "training_backup.safetensors"
"""The file in the backup directory that holds the last epoch's training checkpoint."""


class BackupAndRestore(Callback):
    """Back a run up at each epoch's end to ``backup_dir``; resume an interrupted one from it.

    Create the callback with the same ``backup_dir`` and call ``fit`` again with the same
    arguments after an interruption: training goes on from the epoch after the last one
    backed up (its ``resume_from`` and ``initial_epoch`` are then ignored), with the same
    weights, as far as the data and the callbacks' states allow, as an unbroken run. The
    checkpoint is written atomically, once every callback has finished the epoch.
    ``save_freq``: only ``"epoch"`` (Keras's backups every N batches are not supported).
    ``delete_checkpoint``: delete the backup when training finishes (the directory too,
    once empty, as Keras deletes it; other files in it are left alone).
    """

    def __init__(self, backup_dir: str | os.PathLike, save_freq: str = "epoch", delete_checkpoint: bool = True):
        if not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir):
            raise ValueError(f"BackupAndRestore: backup_dir must be a directory path, got {backup_dir!r}")
        if save_freq != "epoch":
            raise ValueError(f"BackupAndRestore: save_freq must be 'epoch' (a backup at each epoch's end), "
                             f"got {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = bool(delete_checkpoint)

    @property
    def path(self) -> str:
        """The backup file."""
        return os.path.join(self.backup_dir, BACKUP_NAME)

    def checkpoint_to_resume(self) -> str | None:
        return self.path if os.path.isfile(self.path) else None

    @main_process_only
    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        self.trainer.request_checkpoint(self.path, epoch=epoch + 1)

    @main_process_only
    def on_train_end(self, logs: dict) -> None:
        if not self.delete_checkpoint:
            return
        if os.path.isfile(self.path):
            os.remove(self.path)
        if os.path.isdir(self.backup_dir) and not os.listdir(self.backup_dir):
            os.rmdir(self.backup_dir)

    def __repr__(self) -> str:
        return (f"BackupAndRestore(backup_dir={self.backup_dir!r}, save_freq={self.save_freq!r}, "
                f"delete_checkpoint={self.delete_checkpoint})")
