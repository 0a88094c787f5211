"""lamina.data: datasets, mini-batch loading, splits, label encoding and preprocessing; image
folders and per-sample image transforms (:mod:`lamina.data.transforms`; for detection, moving
boxes, masks and keypoints with the image, :mod:`lamina.data.detection_transforms`); random fields and
PDE solutions for operator learning (:mod:`lamina.data.pde`, 1-D; :mod:`lamina.data.pde2d`,
Darcy flow and Navier-Stokes).

Pure NumPy; nothing here needs the autodiff engine. Randomness (shuffling) comes from
generators seeded explicitly or from :func:`lamina.backend.rng`, so
:func:`lamina.manual_seed` makes it reproducible.
"""

from lamina.data import detection_boxes, detection_transforms, transforms
from lamina.data.associative_recall import associative_recall_task
from lamina.data.causal import CausalData, check_treatment, confounded_data, ihdp_like
from lamina.data.class_sampler import MPerClassSampler
from lamina.data.collate import default_collate
from lamina.data.continual import permuted_tasks, rotated_tasks, split_tasks
from lamina.data.dataset import ArrayDataset, Dataset
from lamina.data.datasets import (
    CIFAR10_CLASSES,
    EMNIST_CLASSES,
    FASHION_MNIST_CLASSES,
    KMNIST_CLASSES,
    STL10_CLASSES,
    ChecksumError,
    extract_cifar10_archive,
    load_cifar10,
    load_cifar100,
    load_cifar100_classes,
    load_digits,
    load_emnist,
    load_fashion_mnist,
    load_imdb,
    load_kmnist,
    load_mnist,
    load_stl10,
    load_svhn,
    read_cifar10_bin,
    read_cifar100_bin,
    read_idx,
    read_idx_file,
    read_stl10_images,
    read_svhn_mat,
)
from lamina.data.dynamics import (
    damped_oscillator_trajectory,
    lorenz_trajectory,
    slow_manifold_trajectory,
    traveling_wave_field,
    van_der_pol_trajectory,
)
from lamina.data.few_shot import FewShotTask, FewShotTasks
from lamina.data.graph_encodings import laplacian_pe, random_sign_flip, random_walk_pe, shortest_path_distances
from lamina.data.graph_motifs import MotifGraph, ba_2motifs, ba_shapes, barabasi_albert
from lamina.data.graph_sampling import (
    ClusterLoader,
    GraphSAINTEdgeSampler,
    GraphSAINTNodeSampler,
    GraphSAINTRandomWalkSampler,
    NeighborLoader,
    SubgraphBatch,
    induced_subgraph,
    partition_graph,
)
from lamina.data.graphs import (
    Graph,
    GraphBatch,
    add_remaining_self_loops,
    add_self_loops,
    collate_graphs,
    degree,
    normalized_adjacency,
    remove_self_loops,
    to_undirected,
)
from lamina.data.hetero_graph import HeteroGraph, HomogeneousView
from lamina.data.images import IMAGE_EXTENSIONS, ImageFiles, ImageFolder, UnreadableImageError, find_classes, read_image
from lamina.data.interactions import (
    InteractionDataset,
    Interactions,
    implicit_training_data,
    leave_one_out_split,
    load_movielens,
    sample_negatives,
    synthetic_implicit,
    synthetic_ratings,
    temporal_split,
)
from lamina.data.irregular import IrregularBatch, IrregularSines, irregular_sines, union_grid
from lamina.data.iterable import IterableDataset
from lamina.data.knowledge_graph import (
    TREE_RELATIONS,
    KnowledgeGraph,
    read_triples,
    split_triples,
    synthetic_knowledge_graph,
)
from lamina.data.label_noise import inject_label_noise, noise_transition_matrix
from lamina.data.labels import one_hot
from lamina.data.letor import (
    LetorData,
    ListwiseDataset,
    collate_lists,
    read_letor,
    synthetic_ltr,
    synthetic_relevance,
    write_letor,
)
from lamina.data.link_split import LinkSplit, negative_sampling, train_test_split_edges
from lamina.data.loader import DataLoader
from lamina.data.memory_tasks import BabiLike, babi_like_task, convex_hull_task, copy_task, sort_numbers_task
from lamina.data.mixing import CutMix, MixUp
from lamina.data.molecules import SpringMolecules, batch_point_sets, radius_graph, spring_molecules
from lamina.data.partition import (
    dirichlet_partition,
    iid_partition,
    quantity_skew_partition,
    shard_partition,
)
from lamina.data.pde import (
    burgers_dataset,
    burgers_solve,
    gaussian_random_field_1d,
    heat_dataset,
    heat_solve,
)
from lamina.data.pde2d import (
    darcy_flow_dataset,
    darcy_matrix,
    darcy_solve,
    gaussian_random_field_2d,
    navier_stokes_2d_solve,
    navier_stokes_dataset,
    navier_stokes_forcing,
)
from lamina.data.pfn_priors import GPPrior, MLPClassPrior, PriorBatch, rbf_covariance
from lamina.data.point_clouds import (
    SHAPES,
    Jitter,
    ModelNet,
    PointDropout,
    RandomRotation,
    RandomScale,
    SyntheticShapes,
    normalize_cloud,
    read_off,
    sample_mesh,
    sample_shape,
)
from lamina.data.preprocessing import MeanSubtraction, NotFittedError, Preprocessor, Standardizer
from lamina.data.samplers import (
    PoissonSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from lamina.data.sequences_rec import (
    SequenceSplit,
    leave_one_out_sequences,
    next_item_examples,
    pad_sequences,
    sample_unseen_items,
    synthetic_markov_sequences,
    user_sequences,
)
from lamina.data.sinusoid import SinusoidTasks
from lamina.data.speakers import (
    SpeakerVoice,
    random_speakers,
    synthesize_utterance,
    synthetic_speakers,
    trial_pairs,
)
from lamina.data.split import train_val_test_split
from lamina.data.spurious import colored_digits, corrupt_images
from lamina.data.subsets import ConcatDataset, Subset, random_split
from lamina.data.temporal_graph import LastNeighborSampler, TemporalEvents
from lamina.data.text_noising import (
    document_rotation,
    infill_spans,
    sentence_permutation,
    text_infilling,
    token_deletion,
    token_masking,
)
from lamina.data.timeseries import TimeSeriesDataset, ar_process, seasonal_series, sliding_windows
from lamina.data.tsc_synthetic import CBF_CLASSES, WAVEFORM_CLASSES, cylinder_bell_funnel, synthetic_waveforms
from lamina.data.ucr import pad_series, read_ts, read_ucr_tsv, write_ts, write_ucr_tsv, z_normalize
from lamina.data.whitening import PCAWhitening, ZCAWhitening
from lamina.data.workers import WorkerInfo, get_worker_info

__all__ = [
    "CIFAR10_CLASSES",
    "ConcatDataset",
    "PoissonSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Subset",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "random_split",
    "ArrayDataset",
    "ChecksumError",
    "DataLoader",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "MeanSubtraction",
    "NotFittedError",
    "PCAWhitening",
    "Preprocessor",
    "Standardizer",
    "LastNeighborSampler",
    "TemporalEvents",
    "TimeSeriesDataset",
    "ar_process",
    "seasonal_series",
    "sliding_windows",
    "ZCAWhitening",
    "extract_cifar10_archive",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "one_hot",
    "read_cifar10_bin",
    "read_idx",
    "read_idx_file",
    "train_val_test_split", "CutMix", "MixUp",
    "IterableDataset", "WorkerInfo", "default_collate", "get_worker_info",
    "Graph", "GraphBatch", "add_remaining_self_loops", "add_self_loops", "collate_graphs", "degree",
    "normalized_adjacency", "remove_self_loops", "to_undirected",
    "LinkSplit", "negative_sampling", "train_test_split_edges",
    "SpringMolecules", "batch_point_sets", "radius_graph", "spring_molecules",
    "IMAGE_EXTENSIONS", "ImageFiles", "ImageFolder", "UnreadableImageError", "find_classes", "read_image", "transforms",
    "burgers_dataset", "burgers_solve", "gaussian_random_field_1d", "heat_dataset", "heat_solve",
    "darcy_flow_dataset", "darcy_matrix", "darcy_solve", "gaussian_random_field_2d", "navier_stokes_2d_solve",
    "navier_stokes_dataset", "navier_stokes_forcing",
    "detection_boxes", "detection_transforms",
    "FewShotTask", "FewShotTasks", "SinusoidTasks",
    "InteractionDataset", "Interactions", "implicit_training_data", "leave_one_out_split", "load_movielens",
    "sample_negatives", "synthetic_implicit", "synthetic_ratings", "temporal_split",
]
__all__ += ["SHAPES", "Jitter", "ModelNet", "PointDropout", "RandomRotation", "RandomScale", "SyntheticShapes",
            "normalize_cloud", "read_off", "sample_mesh", "sample_shape"]  # point clouds (point_clouds)
__all__ += ["TREE_RELATIONS", "KnowledgeGraph", "read_triples", "split_triples",
            "synthetic_knowledge_graph"]  # knowledge graphs (knowledge_graph)
__all__ += ["permuted_tasks", "rotated_tasks", "split_tasks"]  # continual-learning benchmarks (continual)
__all__ += ["dirichlet_partition", "iid_partition", "quantity_skew_partition",
            "shard_partition"]  # federated client splits (partition)
__all__ += ["MPerClassSampler"]  # m samples per class in every batch (class_sampler)
__all__ += ["associative_recall_task"]  # key-value recall of the fast weight papers (associative_recall)
__all__ += ["BabiLike", "babi_like_task", "convex_hull_task", "copy_task",
            "sort_numbers_task"]  # pointer and memory network tasks (memory_tasks)
__all__ += ["LetorData", "ListwiseDataset", "collate_lists", "read_letor", "synthetic_ltr", "synthetic_relevance",
            "write_letor"]  # learning-to-rank data (letor)
__all__ += ["CBF_CLASSES", "WAVEFORM_CLASSES", "cylinder_bell_funnel", "pad_series", "read_ts", "read_ucr_tsv",
            "synthetic_waveforms", "write_ts", "write_ucr_tsv", "z_normalize"]  # time-series classification data
__all__ += ["SpeakerVoice", "random_speakers", "synthesize_utterance", "synthetic_speakers",
            "trial_pairs"]  # synthetic speakers and trial lists (speakers)
__all__ += ["ClusterLoader", "GraphSAINTEdgeSampler", "GraphSAINTNodeSampler", "GraphSAINTRandomWalkSampler",
            "HeteroGraph", "HomogeneousView", "NeighborLoader", "SubgraphBatch", "induced_subgraph", "laplacian_pe",
            "partition_graph", "random_sign_flip", "random_walk_pe", "shortest_path_distances"]  # graph sampling
__all__ += ["damped_oscillator_trajectory", "lorenz_trajectory", "slow_manifold_trajectory", "traveling_wave_field",
            "van_der_pol_trajectory"]  # trajectories of dynamical systems (dynamics)
__all__ += ["inject_label_noise", "noise_transition_matrix"]  # synthetic label noise (label_noise)
__all__ += ["CausalData", "check_treatment", "confounded_data", "ihdp_like"]  # causal benchmarks (causal)
__all__ += ["colored_digits", "corrupt_images"]  # distribution-shift benchmarks (spurious)
__all__ += ["EMNIST_CLASSES", "KMNIST_CLASSES", "STL10_CLASSES", "load_cifar100", "load_cifar100_classes",
            "load_emnist", "load_imdb", "load_kmnist", "load_stl10", "load_svhn", "read_cifar100_bin",
            "read_stl10_images", "read_svhn_mat"]  # more standard datasets (datasets)
__all__ += ["SequenceSplit", "leave_one_out_sequences", "next_item_examples", "pad_sequences", "sample_unseen_items",
            "synthetic_markov_sequences", "user_sequences"]  # next-item recommendation data (sequences_rec)
__all__ += ["document_rotation", "infill_spans", "sentence_permutation", "text_infilling", "token_deletion",
            "token_masking"]  # BART's document corruptions (text_noising)
__all__ += ["GPPrior", "MLPClassPrior", "PriorBatch", "rbf_covariance"]  # priors of prior-fitted networks (pfn_priors)
__all__ += ["MotifGraph", "ba_2motifs", "ba_shapes", "barabasi_albert"]  # GNN explanation benchmarks (graph_motifs)
__all__ += ["IrregularBatch", "IrregularSines", "irregular_sines",
            "union_grid"]  # irregularly sampled series (irregular)
