"""OpenAI's MNIST pair (``train_mnist_feature_matching.py``): dense networks for small images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

from torch import Tensor, nn

from lit_ssgan.errors import ConfigError
from lit_ssgan.models.base import Discriminator, DiscriminatorOutput, Generator
from lit_ssgan.models.layers import GaussianNoise, RandomCutout, RandomShift, WNLinear


class MLPDiscriminator(Discriminator):
    """Gaussian noise on the input, then weight-normalised dense ReLU layers, each followed by
    Gaussian noise, then a weight-normalised dense layer to the class logits. The features
    for feature matching are the last hidden layer's activations (before its noise). As in
    OpenAI's code, only the output layer trains its weight-norm scale ``g``; the hidden layers'
    scales stay as the data-dependent initialisation sets them (1 without it).

    Args:
        num_classes: K.
        image_shape: ``(C, H, W)``; images are flattened.
        hidden: widths of the hidden layers (the paper's 1000-500-250-250-250).
        input_noise: std of the noise added to the input (0.3).
        hidden_noise: std of the noise added after each hidden layer (0.5).
        pooled_noise: take the noise from a pool drawn once (:class:`GaussianNoise`): faster
            on CPU, where drawing normals is single-threaded.
        input_shift: shift each input image (real and generated) by up to this many pixels in
            training (:class:`RandomShift`, DiffAugment's translation); 0: off.
        input_cutout: zero a square of this fraction of each input image's side (real and
            generated) in training, after the shift (:class:`RandomCutout`, DiffAugment's cutout); 0: off.
        explicit_fake: add an explicit fake-class output.
        regression: a regression value and a real/fake logit instead of class logits.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        hidden: Sequence[int] = (1000, 500, 250, 250, 250),
        input_noise: float = 0.3,
        hidden_noise: float = 0.5,
        pooled_noise: bool = False,
        explicit_fake: bool = False,
        regression: bool = False,
        input_shift: int = 0,
        input_cutout: float = 0.0,
    ) -> None:
        super().__init__(num_classes, image_shape, explicit_fake, regression)
        widths = [math.prod(image_shape), *hidden]
        self.input_shift = RandomShift(input_shift)
        self.input_cutout = RandomCutout(input_cutout)
        self.input_noise = GaussianNoise(input_noise, pooled_noise)
        self.hidden = nn.ModuleList(
            nn.Sequential(WNLinear(w_in, w_out, train_scale=False), nn.ReLU()) for w_in, w_out in pairwise(widths)
        )
        self.hidden_noise = GaussianNoise(hidden_noise, pooled_noise)
        self.classifier = WNLinear(widths[-1], self.num_outputs)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        h = self.input_noise(self.input_cutout(self.input_shift(x)).flatten(1))
        for i, layer in enumerate(self.hidden):
            h = layer(h if i == 0 else self.hidden_noise(h))
        features = h
        return DiscriminatorOutput(self.classifier(self.hidden_noise(features)), features)


class MLPGenerator(Generator):
    """Dense layers with batch norm and softplus, then a weight-normalised dense layer with a
    sigmoid output (the paper's MNIST generator: 100 → 500 → 500 → C·H·W).

    Args:
        image_shape: ``(C, H, W)`` of the generated images.
        latent_dim: size of z (100).
        hidden: widths of the hidden layers (500, 500).
        output: the last nonlinearity: ``"sigmoid"`` (the paper: images in (0, 1)) or
            ``"softplus"`` (ImprovedGAN-pytorch: non-negative, unbounded above; on MNIST-100 the
            classifier learns faster in the first epochs with it).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 100,
        hidden: Sequence[int] = (500, 500),
        output: Literal["sigmoid", "softplus"] = "sigmoid",
    ) -> None:
        super().__init__(image_shape, latent_dim)
        widths = [latent_dim, *hidden]
        # batch norm after a bias-free dense layer, then the nonlinearity, as lasagne's batch_norm
        blocks = [
            nn.Sequential(nn.Linear(w_in, w_out, bias=False), nn.BatchNorm1d(w_out), nn.Softplus())
            for w_in, w_out in pairwise(widths)
        ]
        if output not in ("sigmoid", "softplus"):
            raise ConfigError(f'MLPGenerator: output must be "sigmoid" or "softplus", got {output!r}')
        last = nn.Sigmoid() if output == "sigmoid" else nn.Softplus()
        self.net = nn.Sequential(*blocks, WNLinear(widths[-1], math.prod(image_shape)), last)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)
