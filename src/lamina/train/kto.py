"""KTO (Kahneman-Tversky optimization, Ethayarajh et al. 2024) of a causal language model on
unpaired completions labelled desirable or undesirable, as Hugging Face TRL's ``KTOTrainer``.

Each batch of an :class:`~lamina.train.UnpairedPreferenceDataset` is scored twice: its own rows
(with gradients) and its mismatched KL rows (without), whose mean policy-to-reference log-ratio,
clipped at 0, is the reference point z_0 of :func:`lamina.functional.kto_loss`.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.nn.module import Module
from lamina.train.kto_data import UnpairedBatch, UnpairedPreferenceDataset
from lamina.train.preference import DPOTrainer, _positive

__all__ = ["KTOTrainer"]


def _mean(values: Tensor) -> float:
    return float(values.numpy().mean())


class KTOTrainer(DPOTrainer):
    """KTO of the trained causal language model ``model`` on an
    :class:`~lamina.train.UnpairedPreferenceDataset`: per completion

        desirable:   lambda_D (1 - sigma(beta (log pi(y|x) - log pi_ref(y|x) - z_0)))
        undesirable: lambda_U (1 - sigma(beta (z_0 - log pi(y|x) + log pi_ref(y|x))))

    averaged over the batch, z_0 the KL estimate of the batch's mismatched rows (see
    :func:`lamina.functional.kto_loss`; lambda_D = ``desirable_weight``, lambda_U =
    ``undesirable_weight``; TRL advises weights with lambda_D n_D / (lambda_U n_U) in [1, 4/3]).
    Log-probabilities are summed over the completion's tokens. The KL rows pair each prompt with
    another row's completion, so batches need two rows or more for a meaningful z_0.

    The reference (``ref_model``, a frozen copy, or the model with its LoRA adapters off), the
    optimizer and the methods ``train_step``, ``evaluate`` and ``fit`` are :class:`DPOTrainer`'s.
    Logs ``loss``, ``kl`` (z_0), and for the groups a batch holds ``rewards/chosen``,
    ``logps/chosen`` (desirable rows), ``rewards/rejected``, ``logps/rejected`` (undesirable rows),
    and ``rewards/margins`` when it holds both.
    """

    who = "KTOTrainer"
    batch_type = UnpairedBatch
    dataset_type = UnpairedPreferenceDataset

    def __init__(self, model: Module, ref_model: Module | None = None, beta: float = 0.1,
                 desirable_weight: float = 1.0, undesirable_weight: float = 1.0, optimizer=None, lr: float = 1e-4,
                 clip_norm: float | None = None, disable_dropout: bool = True):
        super().__init__(model, ref_model, beta=beta, average_log_prob=False, optimizer=optimizer, lr=lr,
                         clip_norm=clip_norm, disable_dropout=disable_dropout)
        self.loss_type = "kto"
        self.desirable_weight = _positive(desirable_weight, "desirable_weight", self.who)
        self.undesirable_weight = _positive(undesirable_weight, "undesirable_weight", self.who)

    def compute_loss(self, batch: UnpairedBatch, training: bool = False) -> tuple[Tensor, dict[str, float]]:
        reference = self.reference_log_probs(batch)
        policy = self._log_probs(self.model, batch)
        reference_kl = self.reference_log_probs(batch.kl)
        with no_grad():
            policy_kl = self._log_probs(self.model, batch.kl)
        d, u = batch.desirable, batch.undesirable
        loss, chosen_rewards, rejected_rewards, kl = F.kto_loss(
            policy[d], policy[u], policy_kl, reference[d], reference[u], reference_kl, beta=self.beta,
            desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight)
        logs = {"loss": loss.item(), "kl": kl.item()}
        if d.size:
            logs.update({"rewards/chosen": _mean(chosen_rewards), "logps/chosen": _mean(policy[d])})
        if u.size:
            logs.update({"rewards/rejected": _mean(rejected_rewards), "logps/rejected": _mean(policy[u])})
        if d.size and u.size:
            logs["rewards/margins"] = logs["rewards/chosen"] - logs["rewards/rejected"]
        return loss, logs
