"""The training workflow: the fit loop, callbacks, metrics, history and checkpoints, and
hyperparameter search on validation data, the learning-rate range test, TensorBoard logs."""

from lamina.lazy import names_on_first_use
from lamina.train import active, continual, federated, nas, semi_supervised
from lamina.train.active import ActiveLearningLoop
from lamina.train.anomaly import DeepSVDD, OODMetrics, deep_svdd_loss, fpr_at_tpr, ood_metrics, svdd_center, svdd_radius
from lamina.train.averaging import SwapEMAWeights, WeightAveraging
from lamina.train.backup import BackupAndRestore
from lamina.train.calibration import (
    ReliabilityDiagram,
    TemperatureScaling,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    plot_reliability_diagram,
    reliability_diagram,
)
from lamina.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
    TerminateOnNaN,
    main_process_only,
)
from lamina.train.causal import (
    DRLearner,
    LinearRegressor,
    MLPRegressor,
    PropensityModel,
    SLearner,
    TLearner,
    XLearner,
    auuc_score,
    average_treatment_effect,
    average_treatment_effect_on_treated,
    cumulative_gain_curve,
    fit_causal_net,
    pehe,
    policy_risk,
    qini_coefficient,
    qini_curve,
)
from lamina.train.conformal import (
    ConformalClassifier,
    ConformalRegressor,
    conformal_quantile,
    coverage,
    cv_plus_intervals,
    interval_coverage,
    mean_set_size,
    mean_width,
    size_stratified_coverage,
)
from lamina.train.data_pruning import (
    ForgettingTracker,
    SelfPacedSchedule,
    el2n_from_probabilities,
    el2n_scores,
    grand_scores,
    prune_dataset,
    self_paced_weights,
)
from lamina.train.depth_metrics import DEPTH_METRICS, depth_metrics, normal_metrics
from lamina.train.distillation import Distiller, train_distillation
from lamina.train.domain_adaptation import DANN, dann_lambda, train_dann
from lamina.train.energy_based import (
    EBMTrainer,
    JEMTrainer,
    PersistentSampler,
    ReplayBuffer,
    jem_energy,
    sgld_sample,
)
from lamina.train.epoch_metric import EpochMetric, MeanMetric
from lamina.train.feature_distillation import FEATURE_LOSSES, FeatureDistiller, born_again, resolve_layer
from lamina.train.federated import SCAFFOLD, FedAdagrad, FedAdam, FedAvg, FedAvgM, FederatedResult, FedProx, FedYogi
from lamina.train.forecast_metrics import (
    mae,
    mape,
    mase,
    naive_forecast,
    rmse,
    seasonal_naive_forecast,
    smape,
)
from lamina.train.forecast_samples import mean_weighted_quantile_loss, sample_crps, weighted_quantile_loss
from lamina.train.generative import GANTrainer, VAETrainer, train_gan, train_vae
from lamina.train.gradcache import cached_mnrl_backward
from lamina.train.group_robust import GroupDRO, group_accuracies, jtt_weights
from lamina.train.history import History
from lamina.train.hyperband import ASHA, asha_search, hyperband, hyperband_schedule, successive_halving
from lamina.train.image_translation import CycleGANTrainer, ImagePool, Pix2PixTrainer, linear_decay_factor
from lamina.train.kto_data import CompletionRows, UnpairedBatch, UnpairedPreferenceDataset, kl_completion_order
from lamina.train.label_model import LabelModel, lf_summary, majority_vote
from lamina.train.laplace import LastLayerLaplace
from lamina.train.lottery import LotteryResult, LotteryRound, iterative_magnitude_pruning
from lamina.train.lr_finder import LRFinderResult, find_learning_rate
from lamina.train.ltr_metrics import dcg, err, ltr_metrics, map_at_k, mrr, ndcg, precision_at_k
from lamina.train.meta import MAML, FastLearner, MetaSGD, Reptile
from lamina.train.metrics import (
    F1Score,
    FBetaScore,
    Precision,
    Recall,
    accuracy,
    binary_accuracy,
    confusion_matrix,
    cosine_similarity,
    log_cosh_error,
    top_k_accuracy,
    top_k_error,
)
from lamina.train.monitor import HistogramMonitor
from lamina.train.multitask import MultiTaskModel, MultiTaskTrainer, load_digit_tasks
from lamina.train.nas import Architect, DartsResult, darts_search
from lamina.train.noisy_labels import (
    CoTeaching,
    CoTeachingPlus,
    confident_joint,
    cross_val_predict_proba,
    estimate_noise_rate,
    find_label_issues,
    label_quality_scores,
)
from lamina.train.panoptic_metrics import PanopticSegments, panoptic_quality
from lamina.train.plda import LDA, PLDA, class_scatter
from lamina.train.preference_data import PreferenceBatch, PreferenceDataset
from lamina.train.privacy import PrivacyMonitor, make_private
from lamina.train.profiling import ProfileSteps
from lamina.train.pruning import MedianPruner, PruningCallback, TrialPruned
from lamina.train.ranking_metrics import (
    auc_per_user,
    evaluate_sampled,
    hit_rate_at_k,
    mean_reciprocal_rank,
    ndcg_at_k,
    rank_items,
    ranking_metrics,
    recall_at_k,
    recommend,
    score_items,
)
from lamina.train.score_metrics import AUC, AveragePrecision, MeanAbsoluteError, R2Score, mean_absolute_error, r2_score
from lamina.train.search import SearchResult, Trial, coarse_to_fine, grid_search, random_search, tune_trainer
from lamina.train.search_space import Choice, Distribution, IntUniform, LogUniform, Uniform
from lamina.train.segmentation_metrics import (
    DiceScore,
    MeanClassAccuracy,
    MeanIoU,
    PixelAccuracy,
    dice_per_class,
    iou_per_class,
    mean_class_accuracy,
    mean_iou,
    pixel_accuracy,
    pixel_confusion_matrix,
)
from lamina.train.semi_supervised import (
    FixMatch,
    FlexMatch,
    MeanTeacher,
    MixMatch,
    PseudoLabel,
    SupervisedBaseline,
)
from lamina.train.sngp import ResetCovariance, SNGPPrediction, sngp_predict
from lamina.train.speaker_metrics import (
    as_norm,
    cosine_scores,
    detection_error_curve,
    eer,
    min_dcf,
    normalize_scores,
    s_norm,
)
from lamina.train.swag import SWAG, CollectSWAG
from lamina.train.task_weighting import (
    DynamicWeightAverage,
    EqualWeighting,
    GradNorm,
    LossWeighting,
    RandomLossWeighting,
    UncertaintyWeighting,
)
from lamina.train.tensorboard import SummaryWriter, TensorBoard
from lamina.train.test_time_adaptation import (
    Tent,
    adapt_batchnorm,
    batchnorm_layers,
    marginal_entropy,
    memo_predict,
    prediction_entropy,
)
from lamina.train.threshold_metrics import (
    PrecisionAtRecall,
    RecallAtPrecision,
    SensitivityAtSpecificity,
    SpecificityAtSensitivity,
)
from lamina.train.tpe import ParzenEstimator, tpe_search
from lamina.train.trainer import Trainer
from lamina.train.ulmfit import (
    NTASGD,
    GradualUnfreezing,
    SlantedTriangular,
    batchify,
    discriminative_param_groups,
    variable_bptt_windows,
)
from lamina.train.uncertainty import DeepEnsemble, PredictiveSummary, mc_dropout_predict, predictive_summary
from lamina.train.vocoder import VocoderTrainer
from lamina.train.weighting import WeightedMean

__all__ = [
    "mae", "mape", "mase", "naive_forecast", "rmse", "seasonal_naive_forecast", "smape",
    "mean_weighted_quantile_loss", "sample_crps", "weighted_quantile_loss",
    "AUC", "AveragePrecision", "CSVLogger", "Callback", "Choice", "Distribution", "EarlyStopping", "EpochMetric",
    "F1Score", "HistogramMonitor", "History", "IntUniform", "LRFinderResult", "LambdaCallback",
    "LearningRateScheduler", "LogUniform", "MeanAbsoluteError", "MeanMetric", "ModelCheckpoint", "Precision",
    "ProgressBar", "R2Score", "Recall", "SearchResult", "SummaryWriter", "TensorBoard", "TerminateOnNaN", "Trainer",
    "Trial", "Uniform", "accuracy", "binary_accuracy", "coarse_to_fine", "confusion_matrix", "find_learning_rate",
    "grid_search", "mean_absolute_error", "r2_score", "random_search", "top_k_accuracy", "top_k_error", "tune_trainer",
    "WeightAveraging", "GANTrainer", "VAETrainer", "train_gan", "train_vae", "DiffusionTrainer", "train_diffusion",
    "FIDMetric", "KIDMetric",
    "FlowMatchingTrainer", "reflow", "train_flow_matching",
    "Distiller",
    "train_distillation", "ProfileSteps", "PrivacyMonitor", "make_private",
    "contrastive_pretrain", "encode", "linear_probe",
    "DINOTrainer", "MultiCrop", "MultiCropWrapper", "cosine_schedule",
    "DINOv2Networks", "DINOv2Trainer",
    "IJEPATrainer",
    "ReliabilityDiagram", "TemperatureScaling", "expected_calibration_error", "maximum_calibration_error",
    "negative_log_likelihood", "plot_reliability_diagram", "reliability_diagram",
    "DiceScore", "MeanClassAccuracy", "MeanIoU", "PixelAccuracy", "dice_per_class", "iou_per_class",
    "mean_class_accuracy", "mean_iou", "pixel_accuracy", "pixel_confusion_matrix",
    "bayesian_search", "expected_improvement",
    "ASHA", "MedianPruner", "ParzenEstimator", "PruningCallback", "TrialPruned", "asha_search", "hyperband",
    "hyperband_schedule", "successive_halving", "tpe_search",
    "WeightedMean",
    "BackupAndRestore", "ReduceLROnPlateau", "SwapEMAWeights",
    "FBetaScore", "PrecisionAtRecall", "RecallAtPrecision", "SensitivityAtSpecificity", "SpecificityAtSensitivity",
    "cosine_similarity", "log_cosh_error",
    "MAML", "FastLearner", "MetaSGD", "Reptile",
    "auc_per_user", "evaluate_sampled", "hit_rate_at_k", "mean_reciprocal_rank", "ndcg_at_k", "rank_items",
    "ranking_metrics", "recall_at_k", "recommend", "score_items",
    "evaluate_next_item", "next_item_metrics",
    "ConformalClassifier", "ConformalRegressor", "conformal_quantile", "coverage", "cv_plus_intervals",
    "interval_coverage", "mean_set_size", "mean_width", "size_stratified_coverage",
    "DeepEnsemble", "PredictiveSummary", "mc_dropout_predict", "predictive_summary",
    "SWAG", "CollectSWAG", "LastLayerLaplace",
]
__all__ += ["DANN", "continual", "dann_lambda", "train_dann"]  # continual learning, domain adaptation
__all__ += ["ConsistencyTrainer", "train_consistency", "train_discrete_diffusion",
            "train_maskgit"]  # few-step generative models, discrete diffusion
__all__ += ["ProgressiveDistiller", "guidance_distillation",
            "progressive_distillation"]  # diffusion distillation (diffusion_distillation)
__all__ += ["DPOTrainer", "ORPOTrainer", "PreferenceBatch", "PreferenceDataset", "RewardModel", "RewardTrainer",
            "SimPOTrainer", "adapters_disabled", "final_hidden_states"]  # preference optimization
__all__ += ["CompletionRollout", "GRPOTrainer", "PPOTrainer", "RLOOTrainer", "completion_log_probs", "completion_mask",
            "group_advantages", "grpo_loss", "k3_kl", "ppo_lm_losses", "rloo_advantages", "rloo_loss",
            "token_gae"]  # online RL of language models: GRPO, RLOO, PPO (lm_rl)
__all__ += ["CompletionRows", "KTOTrainer", "UnpairedBatch", "UnpairedPreferenceDataset",
            "kl_completion_order"]  # KTO
__all__ += ["SCAFFOLD", "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedProx", "FedYogi",
            "FederatedResult", "federated"]  # federated learning (federated)
__all__ += ["ActiveLearningLoop", "FixMatch", "FlexMatch", "MeanTeacher", "MixMatch", "PseudoLabel",
            "SupervisedBaseline", "active", "semi_supervised"]  # semi-supervised and active learning
__all__ += ["cached_mnrl_backward", "retrieval_metrics",
            "retrieval_metrics_from_rankings"]  # sentence embeddings (retrieval, gradcache)
__all__ += ["Architect", "DartsResult", "darts_search", "nas"]  # architecture search (nas)
__all__ += ["DeepSVDD", "OODMetrics", "deep_svdd_loss", "fpr_at_tpr", "ood_metrics", "svdd_center",
            "svdd_radius"]  # anomaly and out-of-distribution detection
__all__ += ["main_process_only"]  # rank-0 guard for callbacks that write files
__all__ += ["DynamicWeightAverage", "EqualWeighting", "GradNorm", "LossWeighting", "MultiTaskModel",
            "MultiTaskTrainer", "RandomLossWeighting", "UncertaintyWeighting", "load_digit_tasks"]  # multi-task
__all__ += ["CycleGANTrainer", "ImagePool", "Pix2PixTrainer", "linear_decay_factor"]  # image-to-image GANs
__all__ += ["ESRGANTrainer"]  # ESRGAN super-resolution GAN (esrgan)
__all__ += ["LotteryResult", "LotteryRound", "iterative_magnitude_pruning"]  # lottery tickets (lottery)
__all__ += ["SAETrainingHistory", "resample_dead_features", "train_sparse_autoencoder",
            "train_tuned_lens"]  # sparse autoencoders, tuned lens (interpretability)
__all__ += ["AdversarialTrainer", "FastAdversarialTraining", "FreeAdversarialTraining", "GaussianAugmentation",
            "IBPTraining", "MARTLoss", "PGDAdversarialTraining", "TRADESLoss", "mart_loss",
            "trades_loss"]  # adversarial training and certified training (adversarial_training)
__all__ += ["dcg", "err", "ltr_metrics", "map_at_k", "mrr", "ndcg", "precision_at_k"]  # graded ranking (ltr_metrics)
__all__ += ["AdversarialDebiasing", "FairnessPenaltyLoss", "TrainedClassifier", "adversary_advantage",
            "demographic_parity_penalty", "equalized_odds_penalty",
            "fair_labels"]  # fairness mitigations in training (fairness)
__all__ += ["LDA", "PLDA", "as_norm", "class_scatter", "cosine_scores", "detection_error_curve", "eer", "min_dcf",
            "normalize_scores", "s_norm"]  # speaker verification scoring (speaker_metrics, plda)
__all__ += ["FEATURE_LOSSES", "FeatureDistiller", "born_again",
            "resolve_layer"]  # feature distillation and born-again networks (feature_distillation)
__all__ += ["BYOLTrainer", "MoCoV2Trainer", "MoCoV3Trainer", "SiameseTrainer", "SimSiamTrainer", "SwAVTrainer",
            "embedding_std", "knn_accuracy", "momentum_schedule", "momentum_update"]  # MoCo, BYOL, SimSiam, SwAV
__all__ += ["EBMTrainer", "JEMTrainer", "PersistentSampler", "ReplayBuffer", "jem_energy",
            "sgld_sample"]  # energy-based models: SGLD, replay buffer, CD, JEM (energy_based)
__all__ += ["CoTeaching", "CoTeachingPlus", "LabelModel", "confident_joint", "cross_val_predict_proba",
            "estimate_noise_rate", "find_label_issues", "label_quality_scores", "lf_summary",
            "majority_vote"]  # noisy labels (noisy_labels), weak supervision (label_model)
__all__ += ["DRLearner", "LinearRegressor", "MLPRegressor", "PropensityModel", "SLearner", "TLearner", "XLearner",
            "auuc_score", "average_treatment_effect", "average_treatment_effect_on_treated", "cumulative_gain_curve",
            "fit_causal_net", "pehe", "policy_risk", "qini_coefficient",
            "qini_curve"]  # treatment effects: meta-learners, uplift metrics (causal)
__all__ += ["GroupDRO", "Tent", "adapt_batchnorm", "batchnorm_layers", "group_accuracies", "jtt_weights",
            "marginal_entropy", "memo_predict",
            "prediction_entropy"]  # distribution shift (group_robust, test_time_adaptation)
__all__ += ["DEPTH_METRICS", "PanopticSegments", "depth_metrics", "normal_metrics",
            "panoptic_quality"]  # dense prediction metrics (depth_metrics, panoptic_metrics)
__all__ += ["VocoderTrainer"]  # GAN vocoders (vocoder)
__all__ += ["ForgettingTracker", "SelfPacedSchedule", "el2n_from_probabilities", "el2n_scores", "grand_scores",
            "prune_dataset", "self_paced_weights"]  # data pruning, forgetting, self-paced (data_pruning)
__all__ += ["Exploit", "PBTResult", "apply_hyperparameters", "copy_member", "explore_config", "pbt_trainer",
            "plot_pbt", "population_based_training", "quantile_members"]  # population-based training (pbt)
__all__ += ["ResetCovariance", "SNGPPrediction", "sngp_predict"]  # SNGP training and prediction (sngp)
__all__ += ["GKDTrainer", "completion_logits"]  # generalized knowledge distillation of LMs (lm_distillation)
__all__ += ["VQGANLoss", "VQGANTrainer", "adaptive_weight", "train_vqgan_prior", "vqgan_discriminator_loss",
            "vqgan_loss"]  # VQGAN training (vqgan)
__all__ += ["NTASGD", "GradualUnfreezing", "SlantedTriangular", "batchify", "discriminative_param_groups",
            "variable_bptt_windows"]  # AWD-LSTM training and ULMFiT fine-tuning (ulmfit)


_MODULES_ON_FIRST_USE = {
    "adversarial_training": ("AdversarialTrainer", "FastAdversarialTraining", "FreeAdversarialTraining",
                             "GaussianAugmentation", "IBPTraining", "MARTLoss", "PGDAdversarialTraining",
                             "TRADESLoss", "mart_loss", "trades_loss"),
    "bayesian": ("bayesian_search", "expected_improvement"),
    "consistency": ("ConsistencyTrainer", "train_consistency"),
    "contrastive": ("contrastive_pretrain", "encode", "linear_probe"),
    "diffusion": ("DiffusionTrainer", "train_diffusion"),
    "diffusion_distillation": ("ProgressiveDistiller", "guidance_distillation", "progressive_distillation"),
    "dino": ("DINOTrainer", "MultiCrop", "MultiCropWrapper", "cosine_schedule"),
    "dinov2": ("DINOv2Networks", "DINOv2Trainer"),
    "discrete_diffusion": ("train_discrete_diffusion",),
    "esrgan": ("ESRGANTrainer",),
    "fairness": ("AdversarialDebiasing", "FairnessPenaltyLoss", "TrainedClassifier", "adversary_advantage",
                 "demographic_parity_penalty", "equalized_odds_penalty", "fair_labels"),
    "fid_metrics": ("FIDMetric", "KIDMetric"),
    "flow_matching": ("FlowMatchingTrainer", "reflow", "train_flow_matching"),
    "ijepa": ("IJEPATrainer",),
    "kto": ("KTOTrainer",),
    "lm_distillation": ("GKDTrainer", "completion_logits"),
    "lm_rl": ("CompletionRollout", "GRPOTrainer", "PPOTrainer", "RLOOTrainer", "completion_log_probs",
              "completion_mask", "group_advantages", "grpo_loss", "k3_kl", "ppo_lm_losses", "rloo_advantages",
              "rloo_loss", "token_gae"),
    "maskgit": ("train_maskgit",),
    "pbt": ("Exploit", "PBTResult", "apply_hyperparameters", "copy_member", "explore_config", "pbt_trainer",
            "plot_pbt", "population_based_training", "quantile_members"),
    "preference": ("DPOTrainer", "ORPOTrainer", "RewardTrainer", "SimPOTrainer", "adapters_disabled"),
    "retrieval": ("retrieval_metrics", "retrieval_metrics_from_rankings"),
    "reward_model": ("RewardModel", "final_hidden_states"),
    "sequential_rec": ("evaluate_next_item", "next_item_metrics"),
    "siamese": ("BYOLTrainer", "MoCoV2Trainer", "MoCoV3Trainer", "SiameseTrainer", "SimSiamTrainer", "SwAVTrainer",
                "embedding_std", "knn_accuracy", "momentum_schedule", "momentum_update"),
    "sparse_autoencoder": ("SAETrainingHistory", "resample_dead_features", "train_sparse_autoencoder"),
    "tuned_lens": ("train_tuned_lens",),
    "vqgan": ("VQGANLoss", "VQGANTrainer", "adaptive_weight", "train_vqgan_prior", "vqgan_discriminator_loss",
              "vqgan_loss"),
}
"""Submodules that reach the model zoo, analysis, text or vision: imported when one of their
names is first used (through the module ``__getattr__`` below), not by ``import lamina.train``."""

__getattr__, __dir__ = names_on_first_use("lamina.train", _MODULES_ON_FIRST_USE, globals())
