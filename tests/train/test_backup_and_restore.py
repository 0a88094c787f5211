"""BackupAndRestore: an interrupted fit, called again, resumes from the last epoch backed up
and ends with the weights of an unbroken run; the backup is deleted when training finishes."""

import os

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train import BackupAndRestore, EarlyStopping, LambdaCallback, Trainer
from lamina.train.backup import BACKUP_NAME


class Interrupted(Exception):
    pass


def blobs(n=32, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((3, 4))[y] * 2 + rng.standard_normal((n, 4))).astype(np.float32)
    return x, y


def new_trainer(callbacks):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, activation="relu"), nn.Dense(3), nn.Softmax())
    model.build((None, 4))
    return Trainer(model, optimizer=optim.Adam(model, lr=0.01), callbacks=callbacks, verbose=0)


def run(trainer, epochs=4):
    x, y = blobs()
    return trainer.fit((x, y), val=blobs(16, seed=1), epochs=epochs, batch_size=8, seed=0)


def interrupt_at(epoch):
    def stop(e, logs):
        if e == epoch:
            raise Interrupted(f"interrupted at epoch {e}")

    return LambdaCallback(on_epoch_begin=stop)


def test_an_interrupted_fit_resumes_where_it_stopped_and_ends_as_an_unbroken_run(tmp_path):
    unbroken = new_trainer([])
    run(unbroken)
    backup_dir = tmp_path / "backup"
    broken = new_trainer([BackupAndRestore(backup_dir), interrupt_at(2)])
    with pytest.raises(Interrupted):
        run(broken)
    assert os.path.isfile(backup_dir / BACKUP_NAME)           # kept after the interruption
    started = []
    resumed = new_trainer([BackupAndRestore(backup_dir), LambdaCallback(on_epoch_begin=lambda e, logs:
                                                                        started.append(e))])
    history = run(resumed)
    assert started == [2, 3]
    assert history.epochs == [1, 2, 3, 4]
    for key in ("loss", "val_loss", "accuracy"):
        assert history[key] == unbroken.history[key], key
    for name, value in unbroken.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)
    assert not backup_dir.exists()                               # finished: deleted, as Keras


def test_the_backup_is_written_at_each_epoch_end_and_a_fresh_fit_after_a_finished_one_starts_over(tmp_path):
    backup_dir = tmp_path / "backup"
    sizes = []
    probe = LambdaCallback(on_epoch_begin=lambda e, logs: sizes.append(os.path.isfile(backup_dir / BACKUP_NAME)))
    run(new_trainer([BackupAndRestore(backup_dir), probe]), epochs=3)
    assert sizes == [False, True, True] and not backup_dir.exists()
    started = []
    run(new_trainer([BackupAndRestore(backup_dir), LambdaCallback(on_epoch_begin=lambda e, logs:
                                                                  started.append(e))]), epochs=2)
    assert started == [0, 1]


def test_delete_checkpoint_false_keeps_the_backup_and_other_files_are_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run(new_trainer([BackupAndRestore(tmp_path, delete_checkpoint=False)]), epochs=1)
    assert (tmp_path / BACKUP_NAME).is_file()
    run(new_trainer([BackupAndRestore(tmp_path)]), epochs=1)    # resumes at the end: nothing to train
    assert not (tmp_path / BACKUP_NAME).exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_early_stopping_state_survives_the_interruption(tmp_path):
    def callbacks(*extra):
        return [BackupAndRestore(tmp_path / "b"), EarlyStopping("loss", patience=2, min_delta=10.0), *extra]

    with pytest.raises(Interrupted):
        run(new_trainer(callbacks(interrupt_at(2))), epochs=6)
    started = []
    history = run(new_trainer(callbacks(LambdaCallback(on_epoch_begin=lambda e, logs: started.append(e)))),
                  epochs=6)
    # No epoch improves by 10 on the first: the wait saved after epoch 2 (1) reaches 2 at epoch 3.
    assert started == [2] and history.epochs == [1, 2, 3]


def test_only_epoch_backups_are_supported():
    with pytest.raises(ValueError, match="save_freq must be 'epoch'"):
        BackupAndRestore("somewhere", save_freq=100)
