"""Discriminator/generator pairs: plain ``nn.Module``s that know nothing of Lightning."""

from lit_ssgan.models.base import Discriminator, DiscriminatorOutput, Generator
from lit_ssgan.models.conv import ConvDiscriminator, ConvGenerator
from lit_ssgan.models.mlp import MLPDiscriminator, MLPGenerator

__all__ = [
    "ConvDiscriminator",
    "ConvGenerator",
    "Discriminator",
    "DiscriminatorOutput",
    "Generator",
    "MLPDiscriminator",
    "MLPGenerator",
]
