"""Training: a step's joint forward/backward graph from PyTorch autograd, its cost on a chip,
the optimizer, memory per chip and data-parallel communication (see ``api.train``)."""

from mtiasim.training.api import train
from mtiasim.training.report import TrainingReport

__all__ = ["TrainingReport", "train"]
