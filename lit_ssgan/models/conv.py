"""OpenAI's CIFAR-10 pair (``train_cifar_feature_matching.py``) for square images of 16–512
pixels, 1 or 3 channels (32×32 and 64×64 being the usual). From 256 pixels up, the discriminator
first halves the image with stages of its own until it is 128 pixels, and the generator keeps on
doubling its map."""

from __future__ import annotations

from functools import partial
from itertools import pairwise

import torch
from torch import Tensor, nn

from lit_ssgan.errors import ConfigError
from lit_ssgan.models.base import Discriminator, DiscriminatorOutput, Generator
from lit_ssgan.models.layers import Dropout, RandomCutout, RandomShift, WNConv2d, WNConvTranspose2d, WNLinear


def _num_upsamplings(image_shape: tuple[int, int, int]) -> int:
    """How many ×2 upsamplings take a 4×4 map to the image; refuses shapes the pair can't take."""
    _, h, w = image_shape
    size, n = 4, 0
    while size < h:
        size, n = size * 2, n + 1
    if h != w or size != h or n < 2 or n > 7:
        raise ConfigError(
            f"the convolutional networks take square images of 16, 32, 64, 128, 256 or 512 pixels, "
            f"got image_shape {tuple(image_shape)}"
        )
    return n


#: the largest image the discriminator's own network (the paper's) takes; larger ones are halved first
CORE_SIZE = 128


class ConvDiscriminator(Discriminator):
    """Dropout 0.2; 3×3 conv ×3 (the third stride 2); dropout 0.5; the same at twice the width;
    dropout 0.5; a valid 3×3 conv; two 1×1 (NIN) layers; global average pooling (the features);
    dense to the logits. Every layer weight-normalised, leaky ReLU 0.2. As in OpenAI's code, only
    the output layer trains its weight-norm scale ``g``; the convolutions' scales stay as the
    data-dependent initialisation sets them (1 without it), so that the network cannot grow its
    own scale to win the real/fake game.

    Images larger than :data:`CORE_SIZE` (256 and 512 pixels) are first halved until they are, by
    stages of a 3×3 conv and a 3×3 stride-2 conv, of half the first width nearest the paper's
    network and half again before that (16 channels at least): the costly full-size layers stay
    narrow, as in the discriminators of progressive GANs.

    Args:
        num_classes: K.
        image_shape: ``(C, H, W)``, square, 16–512 pixels a side, a power of two.
        width: channels of the two stages (96, 192).
        explicit_fake: add an explicit fake-class output.
        regression: a regression value and a real/fake logit instead of class logits.
        input_shift: shift each input image (real and generated) by up to this many pixels in
            training (:class:`RandomShift`, DiffAugment's translation); 0: off.
        input_cutout: zero a square of this fraction of each input image's side (real and
            generated) in training, after the shift (:class:`RandomCutout`, DiffAugment's cutout); 0: off.
        channels_last: run the convolutions on channels-last (NHWC) maps, the layout oneDNN on a
            CPU and cuDNN's tensor cores on a GPU are fastest on (the same values either way).
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        width: tuple[int, int] = (96, 192),
        explicit_fake: bool = False,
        regression: bool = False,
        channels_last: bool = True,
        input_shift: int = 0,
        input_cutout: float = 0.0,
    ) -> None:
        super().__init__(num_classes, image_shape, explicit_fake, regression)
        self.input_shift = RandomShift(input_shift)
        self.input_cutout = RandomCutout(input_cutout)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        _num_upsamplings(image_shape)
        c, (w1, w2) = image_shape[0], width
        act, conv = nn.LeakyReLU(0.2), partial(WNConv2d, train_scale=False)
        halvings = max(0, image_shape[1].bit_length() - CORE_SIZE.bit_length())
        widths = [max(16, w1 >> (halvings - i)) for i in range(halvings)]  # the narrowest at full size
        reduce: list[nn.Module] = []
        for c_in, c_out in zip([c, *widths], widths, strict=False):
            reduce += [conv(c_in, c_out, 3, padding=1), act, conv(c_out, c_out, 3, stride=2, padding=1), act]
        c = widths[-1] if widths else c
        self.features = nn.Sequential(
            *reduce,
            Dropout(0.2),
            conv(c, w1, 3, padding=1), act,
            conv(w1, w1, 3, padding=1), act,
            conv(w1, w1, 3, stride=2, padding=1), act,
            Dropout(0.5),
            conv(w1, w2, 3, padding=1), act,
            conv(w2, w2, 3, padding=1), act,
            conv(w2, w2, 3, stride=2, padding=1), act,
            Dropout(0.5),
            conv(w2, w2, 3), act,
            conv(w2, w2, 1), act,
            conv(w2, w2, 1), act,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )  # fmt: skip
        self.classifier = WNLinear(w2, self.num_outputs, init_scale=0.1)  # OpenAI: init_stdv 0.1

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        features = self.features(self.input_cutout(self.input_shift(x)).contiguous(memory_format=self.memory_format))
        return DiscriminatorOutput(self.classifier(features), features)


class ConvGenerator(Generator):
    """Dense to a 4×4×512 map, then ×2 transposed convolutions (5×5) halving the channels, with
    batch norm and ReLU, the last one weight-normalised with a sigmoid output.

    Args:
        image_shape: ``(C, H, W)``, square, 16–512 pixels a side, a power of two.
        latent_dim: size of z (100).
        base_channels: channels of the 4×4 map (512).
        channels_last: run the transposed convolutions on channels-last (NHWC) maps.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        latent_dim: int = 100,
        base_channels: int = 512,
        channels_last: bool = True,
    ) -> None:
        super().__init__(image_shape, latent_dim)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        n_up = _num_upsamplings(image_shape)
        channels = [max(16, base_channels // 2**i) for i in range(n_up)]  # 16 at least, at 256 and 512 px
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 4 * 4 * base_channels, bias=False),
            nn.BatchNorm1d(4 * 4 * base_channels),
            nn.ReLU(),
            nn.Unflatten(1, (base_channels, 4, 4)),
        )
        blocks: list[nn.Module] = []
        for c_in, c_out in pairwise(channels):
            blocks += [
                nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        blocks += [WNConvTranspose2d(channels[-1], image_shape[0]), nn.Sigmoid()]
        self.upsample = nn.Sequential(*blocks)

    def forward(self, z: Tensor) -> Tensor:
        return self.upsample(self.project(z).contiguous(memory_format=self.memory_format))
