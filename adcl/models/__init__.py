"""Encoders for CLAE: ResNets whose every batch-norm is a clean/adversarial pair."""

from adcl.models.batchnorm import DualBatchNorm
from adcl.models.contrastive import ContrastiveModel, Projector
from adcl.models.resnet import ARCHITECTURES, ResNet

__all__ = ["ARCHITECTURES", "ContrastiveModel", "DualBatchNorm", "Projector", "ResNet"]
