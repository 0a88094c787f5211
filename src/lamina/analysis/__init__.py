"""Analysis of architectures by shape inference (course notes, Computational resource
analysis, Receptive fields, Memory usage).

* :func:`summary` (also ``Module.summary``): the layer table with output volumes,
  parameters, MACs ("flops" in the notes), activation memory and a training-memory estimate.
* :func:`receptive_field`: the input region one unit of a layer sees.
* :func:`compare_architectures`: the course's comparison table, drawn (parameters vs MACs).

Looking inside trained networks (course notes, Saliency maps, Adversarial inputs via back
propagation, Image retrieval, Visualization feature vectors):

* :func:`saliency_map`, :func:`input_gradient`, :func:`smooth_grad`,
  :func:`integrated_gradients`: which pixels a class score depends on.
* :func:`grad_cam`, :func:`grad_cam_plus_plus`, :func:`score_cam`,
  :func:`occlusion_sensitivity`: where in an image a class is found; :func:`plot_cam` draws it.
* attributions as in Captum and SHAP: :func:`input_x_gradient`, :func:`guided_backprop`,
  :func:`deconvnet`, :func:`guided_grad_cam` (modified ReLU backward rules);
  :func:`deeplift`, :func:`deeplift_shap`, :func:`gradient_shap` (against reference inputs);
  :func:`feature_ablation`, :func:`shapley_value_sampling`, :func:`kernel_shap`, :func:`lime`
  (by perturbing feature groups); :func:`lrp` (layer-wise relevance propagation with the
  :class:`LRPZero`, :class:`LRPEpsilon`, :class:`LRPGamma` and :class:`LRPZBox` rules);
  :func:`infidelity` and :func:`sensitivity_max` score them.
* :func:`fgsm`, :func:`targeted_adversarial`: inputs changed, by back propagation, to fool
  the classifier; :func:`pgd`, :func:`bim`, :func:`mifgsm`, :func:`apgd`, :func:`cw_l2`,
  :func:`deepfool` and :func:`robust_accuracy` (:mod:`lamina.analysis.attacks`).
* certified robustness: :class:`SmoothedClassifier` (randomized smoothing,
  :mod:`lamina.analysis.certify`); :func:`interval_bounds`, :func:`crown_bounds`,
  :func:`certified_accuracy` (:mod:`lamina.analysis.bounds`).
* :func:`extract_features`, :class:`FeatureIndex`: image signatures and nearest-neighbour
  retrieval; :func:`precision_at_k`, :func:`mean_average_precision_at_k` score it.
* :func:`reduce_dimensions`, :func:`plot_embedding`: feature vectors drawn in 2-D (PCA, t-SNE).

The computation graph of a loss (course notes, Back propagation on computation graphs):
:func:`draw_graph` draws it, :func:`graph_stats` counts its nodes and the memory kept for backward.

The curvature of a loss surface (course notes, Second-order optimization), by Hessian-vector
products: :func:`hessian_vector_product`, :func:`hessian_eigenvalues`, :func:`lanczos_eigenvalues`,
:func:`hessian_trace`.

The shape of a loss surface (:mod:`lamina.analysis.landscape`, :mod:`lamina.analysis.mode_connectivity`):
:func:`random_direction` (filter-normalised), :func:`pca_directions`, :func:`loss_surface_1d`,
:func:`loss_surface_2d`, :func:`linear_interpolation`, :func:`epsilon_sharpness`, :func:`plot_surface`;
curves of low loss between two trained models, :class:`BezierCurve` and :class:`PolygonalChain`, trained
by :func:`train_curve` and measured by :func:`curve_losses` and :func:`loss_barrier`.

Which training examples a prediction owes to (:mod:`lamina.analysis.influence`,
:mod:`lamina.analysis.data_valuation`): :func:`influence_scores` and :func:`self_influence`
(influence functions), :func:`tracin_scores` and :func:`tracin_self_influence` (TracIn),
:func:`representer_scores` (representer points), :func:`knn_shapley` and :func:`tmc_data_shapley`
(data Shapley values).

Anomaly and out-of-distribution scores (:mod:`lamina.analysis.anomaly`; higher: more anomalous):
:func:`reconstruction_error`, :func:`reconstruction_map` (autoencoders), :class:`PatchCore`
(with :func:`greedy_coreset`, :func:`locally_aware_patches`), :func:`max_softmax_score`,
:func:`energy_score`, :func:`odin_score`, :func:`mahalanobis_score` (with
:func:`fit_class_gaussians`, :func:`mahalanobis_input_score`), :func:`knn_ood_score`. Deep SVDD
and the detection metrics are in :mod:`lamina.train.anomaly`.

Mechanistic interpretability of language models (:mod:`lamina.analysis.interpretability`):
:func:`run_with_cache` and :func:`run_with_hooks` (activations by module path, patched at will),
:func:`logit_lens`, :func:`activation_patching`, :func:`attribution_patching`, :func:`patching_grid`,
:func:`enable_head_hooks` and :func:`head_contributions` (per-head outputs of the attention layers),
:func:`train_probe` and :func:`probe_layers` (linear probes), :func:`loss_recovered` (a sparse
autoencoder spliced into the model).

Locating and editing facts in language models (:mod:`lamina.analysis.model_editing`):
:func:`causal_trace` and :func:`traced_probability` (corrupted subject, restored states),
:func:`second_moment_statistics` (C = E[k k^T] of an MLP's keys), :func:`rome_edit` (rank-one
update, :func:`rank_one_update`) and :func:`memit_edit` (least squares over layers,
:func:`memit_update`), each returning a :class:`ModelEdit` that ``undo()`` reverts.

Explanations of graph neural networks (:mod:`lamina.analysis.gnn_explainer`,
:mod:`lamina.analysis.pg_explainer`): :func:`gnn_explainer` (GNNExplainer's learned edge and
feature masks), :class:`PGExplainer` (an edge-scoring MLP trained once), the baseline
:func:`edge_gradient_saliency`, and :func:`explanation_auc`, :func:`fidelity` to score them.

Concepts a class relies on (:mod:`lamina.analysis.tcav`, TCAV): :func:`concept_activation_vector`
(a linear classifier's normal at a layer), :func:`directional_derivatives`, :func:`tcav_score` and
:func:`tcav` (scores over random sets with the t-test against random CAVs).

What a trained model leaks about its training data (:mod:`lamina.analysis.privacy_attacks`,
:mod:`lamina.analysis.privacy_audit`, :mod:`lamina.analysis.model_inversion`): membership
inference by :func:`loss_threshold_attack`, :func:`confidence_attack`, :func:`entropy_attack`,
:func:`shadow_model_attack` and :func:`lira`, scored by :func:`attack_report` (AUC, TPR at low
FPR, ROC on log axes); :func:`model_inversion` (a class's input recovered by gradient descent);
:func:`empirical_epsilon` (a DP audit: the epsilon an attack proves, with Clopper-Pearson bounds).

Scores of a generative model's samples on feature vectors (:mod:`lamina.analysis.generative_metrics`):
:func:`fid` (with :func:`frechet_distance`, :func:`feature_statistics`), :func:`kid` (with
:func:`polynomial_mmd2`), :func:`inception_score`, :func:`precision_recall_density_coverage`, and
the running :class:`FID` and :class:`KID`.

Fairness of binary classifiers (:mod:`lamina.analysis.fairness`, as fairlearn and AIF360):
:class:`MetricFrame` and the group metrics, :func:`reweighing`, :class:`CorrelationRemover`,
:class:`ExponentiatedGradient`, :class:`ThresholdOptimizer`.

The architecture tables are computed by tracing the model on a zero-sample batch with shape-only weights
(:mod:`lamina.analysis.trace`): no weight is allocated, so VGG16's table costs milliseconds.
"""

from lamina.analysis import fairness
from lamina.analysis.adversarial import TargetedAttack, fgsm, targeted_adversarial
from lamina.analysis.anomaly import (
    ClassGaussians,
    PatchCore,
    energy_score,
    fit_class_gaussians,
    greedy_coreset,
    knn_ood_score,
    locally_aware_patches,
    mahalanobis_input_score,
    mahalanobis_score,
    max_softmax_score,
    odin_perturbation,
    odin_score,
    reconstruction_error,
    reconstruction_map,
)
from lamina.analysis.attacks import apgd, bim, cw_l2, cw_objective, deepfool, mifgsm, pgd, robust_accuracy
from lamina.analysis.attribution import deconvnet, guided_backprop, guided_grad_cam, input_x_gradient
from lamina.analysis.attribution_metrics import infidelity, sensitivity_max
from lamina.analysis.bounds import (
    Bounds,
    certified_accuracy,
    crown_bounds,
    input_box,
    interval_bounds,
    margin_specification,
    worst_case_margins,
)
from lamina.analysis.cam import grad_cam, grad_cam_plus_plus, occlusion_sensitivity, plot_cam, score_cam
from lamina.analysis.certify import (
    ABSTAIN,
    Certificate,
    SmoothedClassifier,
    certified_radius,
    clopper_pearson_lower,
)
from lamina.analysis.compare import compare_architectures, native_input_shape, zoo_builder
from lamina.analysis.data_valuation import (
    DataShapley,
    Representers,
    knn_shapley,
    representer_scores,
    tmc_data_shapley,
)
from lamina.analysis.deeplift import deeplift, deeplift_shap, gradient_shap
from lamina.analysis.embedding import plot_embedding, reduce_dimensions
from lamina.analysis.embedding_accuracy import (
    cluster_scores,
    embedding_accuracy,
    kmeans,
    mean_average_precision_at_r,
    r_precision,
)
from lamina.analysis.fairness import (
    CorrelationRemover,
    ExponentiatedGradient,
    MetricFrame,
    ThresholdOptimizer,
    reweighing,
)
from lamina.analysis.generative_metrics import (
    FID,
    KID,
    GenerativeScores,
    feature_statistics,
    fid,
    frechet_distance,
    inception_score,
    kid,
    polynomial_mmd2,
    precision_recall_density_coverage,
)
from lamina.analysis.gnn_explainer import Explanation, gnn_explainer
from lamina.analysis.graph_drawing import GraphStats, draw_graph, graph_stats
from lamina.analysis.graph_explanation_metrics import explanation_auc, fidelity
from lamina.analysis.graph_masks import (
    Subgraph,
    computation_subgraph,
    edge_gradient_saliency,
    mask_penalty,
    masked_log_probability,
    message_passing_depth,
)
from lamina.analysis.hessian import (
    HessianEigenpairs,
    TraceEstimate,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    lanczos_eigenvalues,
)
from lamina.analysis.influence import influence_scores, self_influence, tracin_scores, tracin_self_influence
from lamina.analysis.interpretability import (
    ActivationCache,
    LinearProbe,
    LogitLens,
    PatchingResult,
    activation_patching,
    attribution_patching,
    enable_head_hooks,
    head_contributions,
    logit_difference,
    logit_lens,
    loss_recovered,
    patching_grid,
    probe_layers,
    run_with_cache,
    run_with_hooks,
    train_probe,
    transformer_parts,
)
from lamina.analysis.landscape import (
    PCADirections,
    epsilon_sharpness,
    linear_interpolation,
    loss_surface_1d,
    loss_surface_2d,
    normalize_direction,
    pca_directions,
    plot_surface,
    random_direction,
)
from lamina.analysis.layer_rules import layer_hyperparameters, layer_macs
from lamina.analysis.lrp import LRPEpsilon, LRPGamma, LRPRule, LRPZBox, LRPZero, lrp, lrp_relevances
from lamina.analysis.mode_connectivity import (
    BezierCurve,
    Curve,
    PolygonalChain,
    curve_losses,
    loss_barrier,
    train_curve,
)
from lamina.analysis.model_editing import (
    CausalTrace,
    EditRequest,
    ModelEdit,
    ValueObjective,
    causal_trace,
    memit_edit,
    memit_update,
    mlp_projection,
    rank_one_update,
    rome_edit,
    second_moment_statistics,
    traced_probability,
)
from lamina.analysis.model_inversion import Inversion, model_inversion
from lamina.analysis.perturbation import feature_ablation, shapley_value_sampling
from lamina.analysis.pg_explainer import PGExplainer, node_embeddings
from lamina.analysis.privacy_attacks import (
    ThresholdAttack,
    best_threshold,
    confidence_attack,
    entropy_attack,
    lira,
    lira_confidence,
    loss_threshold_attack,
    shadow_model_attack,
)
from lamina.analysis.privacy_audit import (
    AttackReport,
    EpsilonAudit,
    attack_report,
    clopper_pearson_interval,
    empirical_epsilon,
    membership_roc,
    plot_roc,
)
from lamina.analysis.receptive import receptive_field, receptive_fields
from lamina.analysis.retrieval import FeatureIndex, extract_features, mean_average_precision_at_k, precision_at_k
from lamina.analysis.saliency import input_gradient, integrated_gradients, saliency_map, smooth_grad
from lamina.analysis.summary import OPTIMIZER_STATES, Summary, summary
from lamina.analysis.surrogate import kernel_shap, lime
from lamina.analysis.tcav import (
    CAV,
    TCAVResult,
    concept_activation_vector,
    directional_derivatives,
    layer_activations,
    layer_gradients,
    tcav,
    tcav_score,
)
from lamina.analysis.trace import LayerCall, Trace, trace

__all__ = [
    "OPTIMIZER_STATES", "FeatureIndex", "GraphStats", "HessianEigenpairs", "LayerCall", "Summary", "TargetedAttack",
    "Trace", "TraceEstimate", "compare_architectures", "draw_graph", "graph_stats", "hessian_eigenvalues",
    "hessian_trace", "hessian_vector_product",
    "extract_features", "fgsm", "grad_cam", "grad_cam_plus_plus", "input_gradient", "integrated_gradients",
    "layer_hyperparameters", "layer_macs", "mean_average_precision_at_k", "native_input_shape",
    "occlusion_sensitivity", "plot_cam", "plot_embedding", "precision_at_k", "receptive_field", "receptive_fields",
    "reduce_dimensions", "saliency_map", "score_cam", "smooth_grad", "summary", "targeted_adversarial", "trace",
    "zoo_builder",
    "LRPEpsilon", "LRPGamma", "LRPRule", "LRPZBox", "LRPZero", "deconvnet", "deeplift", "deeplift_shap",
    "feature_ablation", "gradient_shap", "guided_backprop", "guided_grad_cam", "infidelity", "input_x_gradient",
    "kernel_shap", "lime", "lrp", "lrp_relevances", "sensitivity_max", "shapley_value_sampling",
]
__all__ += ["ClassGaussians", "PatchCore", "energy_score", "fit_class_gaussians", "greedy_coreset", "knn_ood_score",
            "locally_aware_patches", "mahalanobis_input_score", "mahalanobis_score", "max_softmax_score",
            "odin_perturbation", "odin_score", "reconstruction_error", "reconstruction_map"]  # anomaly, OOD
__all__ += ["cluster_scores", "embedding_accuracy", "kmeans", "mean_average_precision_at_r",
            "r_precision"]  # metric-learning accuracy: precision@1, R-precision, MAP@R, NMI, AMI (embedding_accuracy)
__all__ += ["ActivationCache", "LinearProbe", "LogitLens", "PatchingResult", "activation_patching",
            "attribution_patching", "logit_difference", "logit_lens", "loss_recovered", "patching_grid",
            "probe_layers", "run_with_cache", "run_with_hooks", "train_probe",
            "transformer_parts"]  # mechanistic interpretability (interpretability)
__all__ += ["enable_head_hooks", "head_contributions"]  # per-head outputs (interpretability)
__all__ += ["apgd", "bim", "cw_l2", "cw_objective", "deepfool", "mifgsm", "pgd", "robust_accuracy",  # attacks
            "ABSTAIN", "Bounds", "Certificate", "SmoothedClassifier", "certified_accuracy", "certified_radius",
            "clopper_pearson_lower", "crown_bounds", "input_box", "interval_bounds", "margin_specification",
            "worst_case_margins"]  # certified robustness
__all__ += ["CorrelationRemover", "ExponentiatedGradient", "MetricFrame", "ThresholdOptimizer", "fairness",
            "reweighing"]  # fairness assessment and mitigation (fairness)
__all__ += ["DataShapley", "Representers", "influence_scores", "knn_shapley", "representer_scores",
            "self_influence", "tmc_data_shapley", "tracin_scores",
            "tracin_self_influence"]  # training-data attribution (influence, data_valuation)
__all__ += ["AttackReport", "EpsilonAudit", "Inversion", "ThresholdAttack", "attack_report", "best_threshold",
            "clopper_pearson_interval", "confidence_attack", "empirical_epsilon", "entropy_attack", "lira",
            "lira_confidence", "loss_threshold_attack", "membership_roc", "model_inversion", "plot_roc",
            "shadow_model_attack"]  # privacy attacks and audits (privacy_attacks, privacy_audit, model_inversion)
__all__ += ["BezierCurve", "Curve", "PCADirections", "PolygonalChain", "curve_losses", "epsilon_sharpness",
            "lanczos_eigenvalues", "linear_interpolation", "loss_barrier", "loss_surface_1d", "loss_surface_2d",
            "normalize_direction", "pca_directions", "plot_surface", "random_direction",
            "train_curve"]  # loss landscapes and mode connectivity (landscape, mode_connectivity, hessian)
__all__ += ["FID", "GenerativeScores", "KID", "feature_statistics", "fid", "frechet_distance", "inception_score",
            "kid", "polynomial_mmd2",
            "precision_recall_density_coverage"]  # scores of generated samples (generative_metrics)
__all__ += ["CausalTrace", "EditRequest", "ModelEdit", "ValueObjective", "causal_trace", "memit_edit",
            "memit_update", "mlp_projection", "rank_one_update", "rome_edit", "second_moment_statistics",
            "traced_probability"]  # locating and editing facts: causal tracing, ROME, MEMIT (model_editing)
__all__ += ["CAV", "TCAVResult", "concept_activation_vector", "directional_derivatives", "layer_activations",
            "layer_gradients", "tcav", "tcav_score"]  # testing with concept activation vectors (tcav)
__all__ += ["Explanation", "PGExplainer", "Subgraph", "computation_subgraph", "edge_gradient_saliency",
            "explanation_auc", "fidelity", "gnn_explainer", "mask_penalty", "masked_log_probability",
            "message_passing_depth", "node_embeddings"]  # GNN explanations (gnn_explainer, pg_explainer)
