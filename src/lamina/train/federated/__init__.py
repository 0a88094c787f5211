"""Federated learning simulated in one process: FedAvg, FedProx, SCAFFOLD and the adaptive
server optimizers of Reddi et al. (2021). Client splits are in :mod:`lamina.data.partition`."""

from lamina.train.federated.algorithms import SCAFFOLD, FedAvg, FederatedResult, FedProx
from lamina.train.federated.client import as_clients, local_sgd
from lamina.train.federated.server import FedAdagrad, FedAdam, FedAvgM, FedYogi, ServerOptimizer, ServerSGD

__all__ = ["SCAFFOLD", "FedAdagrad", "FedAdam", "FedAvg", "FedAvgM", "FedProx", "FedYogi", "FederatedResult",
           "ServerOptimizer", "ServerSGD", "as_clients", "local_sgd"]
