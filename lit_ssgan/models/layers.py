"""Building blocks shared by the networks: weight-normalised layers and Gaussian noise.

Weight normalisation (Salimans & Kingma 2016) is written for a dense layer as
``(x @ v.T) * g / ||v||``: scaling the layer's *output* rather than rebuilding the weight costs
``N * out`` instead of ``out * in`` multiplications per step, which is what OpenAI's code does as
well (``_WeightNormFunction``). A convolution's weight is the smaller side by far (96 -> 96
channels at 32x32: 83 000 weights against 98 000 outputs an image), so there the weight is
normalised, ``conv(x, g * v / ||v||) + b``, and the bias and its gradient go to oneDNN's or
cuDNN's fused kernels (``_NormalisedWeightFunction``). Each layer is one autograd node, and in a
:func:`frozen_weights` block (the discriminator during the generator's step) its norms, and its
weights in autocast's dtype, are computed once for all forward passes. Kept rather than torch's
``nn.utils.parametrizations.weight_norm``: the checkpoints' ``g``/``v``, the data-dependent init and
the export's folding are built on them; the speed is level (``benchmarks/weight_norm.py``).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_ssgan.errors import check_non_negative, check_probability

#: how many standard normals a pool holds (64 MiB in fp32): windows of it are pooled noise
NOISE_POOL_SIZE = 1 << 24
_noise_pools: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def noise_pool(device: torch.device, dtype: torch.dtype) -> Tensor:
    """``NOISE_POOL_SIZE`` standard normals in ``dtype`` on ``device``, drawn once per process
    from a fixed seed: the same pool in every run and after a resume, so a run's randomness
    (and its exact resume) lies in the offsets drawn from Python's ``random``."""
    key = (device, dtype)
    if key not in _noise_pools:
        generator = torch.Generator(device).manual_seed(0x5EED)
        pool = torch.randn(NOISE_POOL_SIZE, generator=generator, device=device)
        _noise_pools[key] = pool.to(dtype)
    return _noise_pools[key]


class GaussianNoise(nn.Module):
    """Adds ``N(0, sigma^2)`` noise in training mode; the identity in eval mode.

    Args:
        sigma: the noise's standard deviation.
        pooled: on a CPU, take the noise as a window, at an offset drawn from Python's ``random``
            (no tensor op, no host read), of a pool of :data:`NOISE_POOL_SIZE` normals drawn once
            (:func:`noise_pool`) instead of drawing it anew. torch's CPU generator is
            single-threaded and drawing costs about a sixth of an MNIST batch (fp32 or bf16); a
            window costs nothing. Each value is still a standard normal and the values within a
            window are independent, but windows of different calls overlap, so the noise of
            different steps is not independent: a regulariser's noise, not a sampler's. Tensors
            larger than the pool get fresh noise, and so does every tensor on a GPU (whose
            generator is fast) and in a compiled step (whose generator is the compiled code's).
    """

    def __init__(self, sigma: float, pooled: bool = False) -> None:
        super().__init__()
        self.sigma, self.pooled = sigma, pooled

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.sigma == 0:
            return x
        on_cpu = x.device.type == "cpu" and not torch.compiler.is_compiling()
        if self.pooled and on_cpu and x.numel() <= NOISE_POOL_SIZE:
            start = random.randrange(NOISE_POOL_SIZE - x.numel() + 1)  # saved in checkpoints (random_state.py)
            strides = [math.prod(x.shape[i + 1 :]) for i in range(x.dim())]
            noise = noise_pool(x.device, x.dtype).as_strided(x.shape, strides, start)  # one view op
        elif on_cpu and x.dtype in (torch.bfloat16, torch.float16):
            # torch's CPU generator draws 16-bit normals slower than 32-bit ones: draw in 32 bits and round
            noise = torch.randn(x.shape, dtype=torch.float32).to(x.dtype)
        else:
            noise = torch.randn_like(x)
        return torch.add(x, noise, alpha=self.sigma)  # one fused op, no temporary

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}" + (", pooled=True" if self.pooled else "")


class Dropout(nn.Dropout):
    """``nn.Dropout``, whose mask on a CPU is drawn as ``uniform >= p`` rather than with
    ``bernoulli_``: the same distribution, faster on torch's CPU generator (benchmarks/README.md),
    and a mask of one byte an element. Elsewhere (CUDA's
    fused dropout is fast) and in compiled code (which draws its own) it is ``nn.Dropout`` itself.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> kept = Dropout(0.2)(torch.ones(100_000))
        >>> round(float((kept > 0).float().mean()), 2), float(kept.max())
        (0.8, 1.25)
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or torch.compiler.is_compiling():
            return super().forward(x)
        keep = torch.rand(x.shape) >= self.p
        return (x * keep).mul_(1 / (1 - self.p))


class RandomShift(nn.Module):
    """Shifts each image by its own random whole number of pixels, at most ``max_shift`` in
    each direction, filling with zeros, in training mode; the identity in eval mode.

    As the discriminator's first layer it is the translation of DiffAugment (Zhao et al. 2020,
    "Differentiable Augmentation for Data-Efficient GAN Training"): real and generated images
    alike are shifted, and the generator's gradient flows through the shift. One gather for
    the whole batch, on the batch's device; the shifts come from the global RNG.

    Args:
        max_shift: the largest shift in pixels, up, down, left or right (0: off).
        option: the option named when ``max_shift`` is refused (negative).
    """

    def __init__(self, max_shift: int, option: str = "input_shift") -> None:
        super().__init__()
        self.max_shift = int(check_non_negative(option, max_shift))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.max_shift == 0:
            return x
        n, _, h, w = x.shape
        s = self.max_shift
        padded = nn.functional.pad(x, (s, s, s, s))
        offsets = torch.randint(2 * s + 1, (2, n, 1, 1), device=x.device)
        rows = offsets[0] + torch.arange(h, device=x.device).view(1, h, 1)
        cols = offsets[1] + torch.arange(w, device=x.device).view(1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}"


def cutout(x: Tensor, ratio: float) -> Tensor:
    """``x`` (``(N, C, H, W)``) with a square of ``ratio`` of the side zeroed in each image, centred
    at a random pixel of its own (:class:`RandomCutout`'s work, in any mode); ``ratio`` 0: ``x``."""
    if ratio == 0:
        return x
    n, _, h, w = x.shape

    def inside(side: int, shape: tuple[int, ...]) -> Tensor:
        """Whether each row (or column) lies in its image's square: ``(N, 1, side, 1)`` or ``(N, 1, 1, side)``."""
        size = max(1, int(side * ratio + 0.5))
        first = torch.randint(side + 1, (n, 1, 1, 1), device=x.device) - size // 2  # the centre in [0, side]
        index = torch.arange(side, device=x.device).view(shape)
        return (index >= first) & (index < first + size)

    keep = ~(inside(h, (1, 1, h, 1)) & inside(w, (1, 1, 1, w)))
    return x * keep.to(x.dtype)


class RandomCutout(nn.Module):
    """Zeroes a square of ``ratio`` of each image's side, centred at a random pixel of its own
    (the square may reach past the edge), in training mode; the identity in eval mode.

    As the discriminator's first layer it is the cutout of DiffAugment (Zhao et al. 2020) and of
    FixMatch's strong view (DeVries & Taylor 2017): real and generated images alike lose a patch,
    and each pass of the same batch loses another one, so the consistency term's two passes
    differ by more than their dropout. One mask for the batch, built on its device from the
    global RNG (no host read); the gradient flows to the pixels kept.

    Args:
        ratio: the square's side as a fraction of the image's (DiffAugment: 0.5); 0: off.
        option: the option named when ``ratio`` is refused (outside [0, 1]).
    """

    def __init__(self, ratio: float, option: str = "input_cutout") -> None:
        super().__init__()
        self.ratio = check_probability(option, ratio)

    def forward(self, x: Tensor) -> Tensor:
        return cutout(x, self.ratio) if self.training else x

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"


#: ``||v||`` is taken as ``sqrt(||v||^2 + NORM_EPS^2)``: a zero direction gives a zero output and a
#: zero gradient, with no special case (for any norm above 1e-6 the two differ by under 1e-12)
NORM_EPS = 1e-12


class Prepared(NamedTuple):
    """What a weight-normalised layer's passes need of its weights while they stay fixed, computed
    for all the layers of a network at once (:func:`prepare`): per output unit ``inverse`` =
    ``1 / ||v||``, ``scale`` = ``g / ||v||`` and ``coefficient`` = ``g / ||v||^3`` (the norm's term of
    ``v``'s gradient), and the ``weight`` and ``bias`` the layer's op runs on, in the pass's dtype
    (a dense layer: ``v`` itself, its scale and its bias; a convolution: the weight
    ``g * v / ||v||``, and the bias)."""

    inverse: Tensor
    scale: Tensor
    coefficient: Tensor
    weight: Tensor
    bias: Tensor | None


@torch.no_grad()
def prepare(layers: list[_WeightNorm], dtype: torch.dtype) -> list[Prepared]:
    """:class:`Prepared` for each layer in ``layers``: one norm a layer, then foreach ops over all of
    them (a handful of kernels for the whole network instead of a handful a layer). What a pass in a
    lower precision (autocast's ``dtype``) needs of the weights is copied, in one foreach copy, into
    buffers each layer keeps for it: one op, not one cast a tensor."""
    inverse = [torch.linalg.vector_norm(layer.v, dim=layer.norm_dims) for layer in layers]
    torch._foreach_mul_(inverse, inverse)
    torch._foreach_add_(inverse, NORM_EPS**2)
    torch._foreach_rsqrt_(inverse)
    scale = torch._foreach_mul([layer.g for layer in layers], inverse)
    coefficient = torch._foreach_mul(scale, inverse)
    torch._foreach_mul_(coefficient, inverse)
    prepared, cast_to, cast_from = [], [], []

    def cast(layer: _WeightNorm, name: str, tensor: Tensor) -> Tensor:
        if tensor.dtype == dtype:
            return tensor
        cast_to.append(layer.cast_buffer(name, tensor, dtype))
        cast_from.append(tensor)
        return cast_to[-1]

    for layer, inv, sc, coef in zip(layers, inverse, scale, coefficient, strict=True):
        bias = None if layer.bias is None else cast(layer, "bias", layer.bias)
        if layer.normalises_weight:
            weight = cast(layer, "weight", layer.v * sc.view(layer.weight_view))
            prepared.append(Prepared(inv, sc, coef, weight, bias))
        else:  # a dense layer: its (out,) scale and bias broadcast over its (..., out) output
            prepared.append(Prepared(inv, cast(layer, "scale", sc), coef, cast(layer, "v", layer.v), bias))
    if cast_to:
        torch._foreach_copy_(cast_to, cast_from)
    return prepared


def _inverse_norm(v: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``1 / ||v||`` over ``dims``: one value per output unit."""
    return torch.linalg.vector_norm(v, dim=dims).square_().add_(NORM_EPS**2).rsqrt_()


class _WeightNormFunction(torch.autograd.Function):
    """``op(x, v) * g / ||v|| + bias`` as one autograd node with one backward for all four inputs.

    Autograd's graph of the same expression computes ``v``'s gradient as two weight-sized tensors,
    through the op and through the norm, and then adds them; here the norm's term
    (``-v * grad_scale * g / ||v||^3``) is added in place to the op's, and the gradients of the
    scale and the bias are summed in the weights' precision. Under autocast the op runs in
    autocast's dtype on ``x`` and ``v`` cast to it; ``v``, ``g`` and the bias keep their dtype and get
    their gradients in it. ``prepared`` is the layer's :class:`Prepared`. It saves for backward what
    autograd's graph saves: the input and weight the op ran on, the op's output, and the scales.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None, layer: _WeightNorm, prepared: Prepared
    ) -> Tensor:
        x_c = x.to(prepared.weight.dtype)
        out = layer.op(x_c, prepared.weight)
        y = out * prepared.scale if prepared.bias is None else torch.addcmul(prepared.bias, out, prepared.scale)
        ctx.save_for_backward(x_c, v, prepared.weight, prepared.inverse, out, prepared.scale, prepared.coefficient)
        ctx.layer, ctx.x_dtype = layer, x.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x_c, v, v_c, inverse, out, scale, coefficient = ctx.saved_tensors
        layer: _WeightNorm = ctx.layer
        need_x, need_v, need_g, need_bias = ctx.needs_input_grad[:4]
        unit_sums = [d for d in range(grad.ndim) if d != layer.unit_dim % grad.ndim]  # all but the units'
        grad_x, grad_v, _ = layer.op_backward(grad * scale, x_c, v_c, need_x, need_v)
        grad_g = grad_bias = None
        if need_v or need_g:
            grad_scale = (grad * out).sum(unit_sums, dtype=v.dtype)  # summed in the weights' precision
            if need_g:
                grad_g = grad_scale * inverse
            if need_v:
                assert grad_v is not None
                # d(1/||v||)/dv = -v / ||v||^3, times d(loss)/d(1/||v||) = grad_scale * g
                shape = [1 if d in layer.norm_dims else -1 for d in range(v.ndim)]
                grad_v = grad_v.to(v.dtype).addcmul_(v, (grad_scale * coefficient).view(shape), value=-1)
        if need_bias:
            grad_bias = grad.sum(unit_sums, dtype=v.dtype)
        if grad_x is not None:
            grad_x = grad_x.to(ctx.x_dtype)
        return grad_x, grad_v, grad_g, grad_bias, None, None


class _NormalisedWeightFunction(torch.autograd.Function):
    """``op(x, g * v / ||v||, bias)`` as one autograd node: the weight built (in :func:`prepare`, once
    per pass or per :func:`frozen_weights` block), then one fused op; backward gets the input's,
    the weight's and the bias's gradients from one call and turns the weight's into ``v``'s and
    ``g``'s, all weight-sized. Under autocast the op runs in autocast's dtype; ``v``, ``g`` and the
    bias get their gradients in their own. ``prepared`` is the layer's :class:`Prepared`."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, v: Tensor, g: Tensor, bias: Tensor | None, layer: _WeightNorm, prepared: Prepared
    ) -> Tensor:
        w_c = prepared.weight
        x_c = x.to(w_c.dtype)
        ctx.save_for_backward(x_c, v, w_c, prepared.inverse, prepared.scale, prepared.coefficient)
        ctx.layer, ctx.x_dtype, ctx.bias_dtype = layer, x.dtype, None if bias is None else bias.dtype
        return layer.op(x_c, w_c, prepared.bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x_c, v, w_c, inverse, scale, coefficient = ctx.saved_tensors
        layer: _WeightNorm = ctx.layer
        need_x, need_v, need_g, need_bias = ctx.needs_input_grad[:4]
        grad_x, grad_w, grad_bias = layer.op_backward(
            grad.to(w_c.dtype), x_c, w_c, need_x, need_v or need_g, need_bias and ctx.bias_dtype is not None
        )
        grad_v = grad_g = None
        if grad_w is not None:
            grad_w = grad_w.to(v.dtype)
            shape = layer.weight_view
            along = (grad_w * v).sum(layer.norm_dims)  # <dL/dw, v>, one per unit
            if need_g:
                grad_g = along * inverse  # w = g v / ||v||
            if need_v:
                # dw/dv: g / ||v|| along every direction, less g v v^T / ||v||^3
                grad_v = torch.addcmul(grad_w * scale.view(shape), v, (along * coefficient).view(shape), value=-1)
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.bias_dtype)
        if grad_x is not None:
            grad_x = grad_x.to(ctx.x_dtype)
        return grad_x, grad_v, grad_g, grad_bias, None, None


class _WeightNorm(nn.Module):
    """Direction ``v``, per-output-unit scale ``g`` and bias ``b``; subclasses apply ``v``
    (:meth:`op`) and give that op's gradients (:meth:`op_backward`)."""

    #: normalise the weight (a convolution's) rather than scale the output (a dense layer's)
    normalises_weight = False
    #: dimensions of ``v`` reduced for the per-output-unit norm
    norm_dims: tuple[int, ...] = (1,)
    #: shape the ``(out,)`` scale takes to broadcast over ``v``
    weight_view: tuple[int, ...] = (-1, 1)
    #: shape the ``(out,)`` scale takes to broadcast over the layer's output
    out_view: tuple[int, ...] = (1, -1)
    #: the output's dimension of units
    unit_dim = -1

    def __init__(
        self,
        v_shape: tuple[int, ...],
        out_features: int,
        bias: bool,
        init_std: float,
        init_scale: float = 1.0,
        train_scale: bool = True,
    ) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(v_shape) * init_std)
        if train_scale:
            self.g = nn.Parameter(torch.ones(out_features))
        else:  # fixed after the data-dependent initialisation, as OpenAI's hidden layers
            self.register_buffer("g", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.init_scale = init_scale
        #: set by :func:`frozen_weights`: the block whose weights stay fixed, and what it prepared
        self._frozen: _FrozenBlock | None = None
        #: :func:`prepare`'s buffers of this layer's tensors in a lower precision, by name and dtype
        self._casts: dict[tuple[str, torch.dtype], Tensor] = {}

    def cast_buffer(self, name: str, like: Tensor, dtype: torch.dtype) -> Tensor:
        """The buffer that holds ``like`` (this layer's tensor ``name``) in ``dtype`` for a pass: kept
        from pass to pass. A pass's backward reads it, and the next pass of the layer overwrites it,
        so passes that each backpropagate take their turns (autograd refuses otherwise)."""
        buffer = self._casts.get((name, dtype))
        if buffer is None or buffer.shape != like.shape or buffer.device != like.device:
            buffer = self._casts[(name, dtype)] = torch.empty_like(like, dtype=dtype)
        return buffer

    def op(self, x: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def op_backward(
        self, grad: Tensor, x: Tensor, v: Tensor, need_x: bool, need_v: bool, need_bias: bool = False
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The gradients of :meth:`op`'s output ``grad`` with respect to ``x``, ``v`` and the bias
        (each only if needed)."""
        raise NotImplementedError

    def prepared(self, dtype: torch.dtype) -> Prepared:
        """This layer's :class:`Prepared` in ``dtype``: computed for this pass, or taken from the
        :func:`frozen_weights` block it runs in (which computes it for all its layers at once)."""
        return prepare([self], dtype)[0] if self._frozen is None else self._frozen.of(self, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return self.composite(x)
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        function = _NormalisedWeightFunction if self.normalises_weight else _WeightNormFunction
        y = function.apply(x, self.v, self.g, self.bias, self, self.prepared(dtype))
        return cast(Tensor, y)

    def composite(self, x: Tensor) -> Tensor:
        """The layer as plain tensor ops, differentiated by autograd: what ``torch.compile`` traces and
        fuses (the custom autograd nodes above are the eager path's kernels, which it cannot fuse)."""
        squares = torch.linalg.vector_norm(self.v, dim=self.norm_dims).square()
        scale = self.g * torch.rsqrt(squares + NORM_EPS**2)
        if self.normalises_weight:
            return self.op(x, self.v * scale.view(self.weight_view), self.bias)
        out = self.op(x, self.v)
        out = out * scale.to(out.dtype)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def plain(self) -> nn.Module:
        """The torch layer this one computes in eval mode, with the weight ``g * v / ||v||`` folded
        in (a copy: training this layer further does not change it)."""
        raise NotImplementedError

    @torch.no_grad()
    def folded_weight(self, inverse: Tensor | None = None) -> Tensor:
        """The plain layer's weight, ``g * v / ||v||``, in the weights' dtype (``inverse``:
        ``1 / ||v||`` if already computed)."""
        inverse = _inverse_norm(self.v, self.norm_dims) if inverse is None else inverse
        return self.v * (self.g * inverse).view(self.weight_view)

    @torch.no_grad()
    def _filled(self, layer: nn.Linear | nn.Conv2d | nn.ConvTranspose2d) -> nn.Module:
        """``layer`` (a torch layer of this one's shape) with the folded weight and this bias."""
        layer.weight.copy_(self.folded_weight())
        if self.bias is not None and layer.bias is not None:
            layer.bias.copy_(self.bias)
        return layer.to(self.v.device)

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Sets ``g`` and the bias so that this layer's outputs on ``x`` have mean 0 and standard
        deviation ``init_scale`` per unit (Salimans & Kingma 2016, section 3)."""
        t = self.op(x.to(self.v.dtype), self.v) * _inverse_norm(self.v, self.norm_dims).view(self.out_view)
        dims = [d for d in range(t.ndim) if d != 1]
        mean, std = t.mean(dim=dims), t.std(dim=dims)
        self.g.copy_(self.init_scale / (std + 1e-8))
        if self.bias is not None:
            self.bias.copy_(-mean * self.g)


class _FrozenBlock:
    """The weight-normalised layers of a :func:`frozen_weights` block and, per dtype, what
    :func:`prepare` computed for them all at once (when the first of them ran in that dtype)."""

    def __init__(self, layers: list[_WeightNorm]) -> None:
        self.layers = layers
        self.values: dict[torch.dtype, dict[int, Prepared]] = {}

    def of(self, layer: _WeightNorm, dtype: torch.dtype) -> Prepared:
        if dtype not in self.values:
            prepared = prepare(self.layers, dtype)
            self.values[dtype] = {id(m): p for m, p in zip(self.layers, prepared, strict=True)}
        return self.values[dtype][id(layer)]


@contextmanager
def frozen_weights(network: nn.Module) -> Iterator[None]:
    """A block in which ``network``'s weights do not change (a forward pass; or the generator's
    step, for the discriminator): its weight-normalised layers compute their norms, and their
    weights in autocast's dtype, together (:func:`prepare`) and once for all the block's forward
    passes, instead of each layer once a pass. Blocks may nest (the outer one's values are kept)."""
    if torch.compiler.is_compiling():  # compiled code computes each norm once itself
        yield
        return
    layers = [m for m in network.modules() if isinstance(m, _WeightNorm)]
    outer = [layer._frozen for layer in layers]
    block = _FrozenBlock([layer for layer in layers if layer._frozen is None])
    for layer in block.layers:
        layer._frozen = block
    try:
        yield
    finally:
        for layer, frozen in zip(layers, outer, strict=True):
            layer._frozen = frozen


def fold_weight_norm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode in which every weight-normalised layer is the plain
    torch layer it computes (:meth:`_WeightNorm.plain`): what an export takes, with no custom
    autograd node and no norm computed at run time. The values it gives are ``network``'s in eval
    mode (the same up to float rounding)."""
    folded = copy.deepcopy(network).eval()
    if isinstance(folded, _WeightNorm):
        return folded.plain()
    for name, module in list(folded.named_modules()):
        if isinstance(module, _WeightNorm):
            parent, _, attribute = name.rpartition(".")
            setattr(folded.get_submodule(parent), attribute, module.plain())
    return folded


@torch.no_grad()
def init_weight_norm_from_data(network: nn.Module, *inputs: Tensor) -> None:
    """Data-dependent initialisation of every weight-normalised layer of ``network``: one
    forward pass over ``inputs`` in which each layer, as it is reached, scales and shifts its
    outputs to mean 0 and standard deviation ``init_scale`` per unit (the layers after it then
    see the normalised outputs)."""

    def init(layer: nn.Module, args: tuple[Tensor, ...]) -> None:
        assert isinstance(layer, _WeightNorm)
        layer.init_from_data(args[0])

    handles = [m.register_forward_pre_hook(init) for m in network.modules() if isinstance(m, _WeightNorm)]
    try:
        network(*inputs)
    finally:
        for handle in handles:
            handle.remove()


class WNLinear(_WeightNorm):
    """Weight-normalised ``nn.Linear``: ``init_scale`` is the output std that
    :func:`init_weight_norm_from_data` aims for; with ``train_scale=False``, ``g`` is a buffer."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init_std: float = 0.05,
        init_scale: float = 1.0,
        train_scale: bool = True,
    ) -> None:
        super().__init__((out_features, in_features), out_features, bias, init_std, init_scale, train_scale)

    def op(self, x: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.linear(x, v, bias)

    def plain(self) -> nn.Module:
        out_features, in_features = self.v.shape
        return self._filled(nn.Linear(in_features, out_features, bias=self.bias is not None))

    def op_backward(
        self, grad: Tensor, x: Tensor, v: Tensor, need_x: bool, need_v: bool, need_bias: bool = False
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        grad_x = grad @ v if need_x else None
        grad_v = grad.flatten(0, -2).t() @ x.flatten(0, -2) if need_v else None
        grad_bias = grad.flatten(0, -2).sum(0) if need_bias else None
        return grad_x, grad_v, grad_bias


class WNConv2d(_WeightNorm):
    """Weight-normalised ``nn.Conv2d``; with ``train_scale=False``, ``g`` is a buffer."""

    normalises_weight = True
    norm_dims = (1, 2, 3)
    weight_view = (-1, 1, 1, 1)
    out_view = (1, -1, 1, 1)
    unit_dim = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        train_scale: bool = True,
    ) -> None:
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        super().__init__(shape, out_channels, True, 0.05, train_scale=train_scale)
        self.stride, self.padding = stride, padding

    def op(self, x: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.conv2d(x, v, bias, stride=self.stride, padding=self.padding)

    def plain(self) -> nn.Module:
        out_channels, in_channels, kernel_size, _ = self.v.shape
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, self.stride, self.padding, bias=self.bias is not None)
        return self._filled(conv)

    def op_backward(
        self, grad: Tensor, x: Tensor, v: Tensor, need_x: bool, need_v: bool, need_bias: bool = False
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        stride, padding = [self.stride] * 2, [self.padding] * 2
        bias_sizes = [v.shape[0]] if need_bias else None
        grad_x, grad_v, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, v, bias_sizes, stride, padding, [1, 1], False, [0, 0], 1, [need_x, need_v, need_bias]
        )
        return grad_x, grad_v, grad_bias


class WNConvTranspose2d(_WeightNorm):
    """Weight-normalised ``nn.ConvTranspose2d`` that doubles the spatial size (kernel 5)."""

    normalises_weight = True
    norm_dims = (0, 2, 3)
    weight_view = (1, -1, 1, 1)
    out_view = (1, -1, 1, 1)
    unit_dim = 1

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__((in_channels, out_channels, 5, 5), out_channels, True, 0.05)

    def op(self, x: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.conv_transpose2d(x, v, bias, stride=2, padding=2, output_padding=1)

    def plain(self) -> nn.Module:
        in_channels, out_channels, _, _ = self.v.shape
        conv = nn.ConvTranspose2d(in_channels, out_channels, 5, 2, 2, output_padding=1, bias=self.bias is not None)
        return self._filled(conv)

    def op_backward(
        self, grad: Tensor, x: Tensor, v: Tensor, need_x: bool, need_v: bool, need_bias: bool = False
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        bias_sizes = [v.shape[1]] if need_bias else None
        grad_x, grad_v, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, v, bias_sizes, [2, 2], [2, 2], [1, 1], True, [1, 1], 1, [need_x, need_v, need_bias]
        )
        return grad_x, grad_v, grad_bias
