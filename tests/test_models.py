import random

import pytest
import torch
from torch import nn

from lit_ssgan.errors import ConfigError
from lit_ssgan.models import ConvDiscriminator, ConvGenerator, MLPDiscriminator, MLPGenerator
from lit_ssgan.models.base import evaluating
from lit_ssgan.models.layers import WNConv2d, WNConvTranspose2d, WNLinear, init_weight_norm_from_data


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 32, 32), (1, 64, 64), (3, 64, 64)])
def test_conv_pair_shapes(shape):
    d, g = ConvDiscriminator(10, shape, width=(8, 16)), ConvGenerator(shape, base_channels=32)
    x = g(g.sample_latent(3))
    assert x.shape == (3, *shape) and x.min() >= 0 and x.max() <= 1
    out = d(x)
    assert out.logits.shape == (3, 10) and out.features.shape == (3, 16)


@pytest.mark.parametrize("size, halving_widths", [(128, []), (256, [16]), (512, [16, 16])])
def test_the_conv_discriminator_halves_images_beyond_128_px_first_and_the_generator_follows(size, halving_widths):
    d, g = ConvDiscriminator(10, (1, size, size), width=(8, 16)), ConvGenerator((1, size, size), base_channels=32)
    convs = [m for m in d.features if isinstance(m, WNConv2d)]
    halvings = len(halving_widths)
    assert [m.v.shape[0] for m in convs[: 2 * halvings : 2]] == halving_widths  # 16 channels at least
    assert [m.stride for m in convs[1 : 2 * halvings : 2]] == [2] * halvings
    assert len(convs) == 9 + 2 * halvings  # then the paper's nine, at 128 px
    x = g(g.sample_latent(2))
    assert x.shape == (2, 1, size, size)
    sizes: list[int] = []
    convs[2 * halvings].register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[-1]))
    with torch.no_grad():
        d(x)
    assert sizes == [128]  # the paper's network sees 128 px, whatever the image size


@pytest.mark.parametrize("explicit_fake, outputs", [(False, 10), (True, 11)])
def test_mlp_pair_shapes_and_explicit_fake_output(explicit_fake, outputs):
    d = MLPDiscriminator(10, (1, 28, 28), explicit_fake=explicit_fake)
    g = MLPGenerator((1, 28, 28))
    out = d(g(g.sample_latent(4)))
    assert out.logits.shape == (4, outputs)
    assert out.features.shape == (4, 250)  # the last hidden layer, as in OpenAI's feature matching


def test_discriminator_noise_only_in_training():
    d = MLPDiscriminator(10, (1, 8, 8), hidden=(16, 8))
    x = torch.rand(2, 1, 8, 8)
    assert not torch.equal(d(x).logits, d(x).logits)
    d.eval()
    assert torch.equal(d(x).logits, d(x).logits)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 16), (3, 8, 8), (3, 48, 48), (3, 1024, 1024)])
def test_conv_refuses_shapes_it_cannot_take(shape):
    with pytest.raises(ValueError, match="image_shape"):
        ConvDiscriminator(10, shape)
    with pytest.raises(ValueError, match="image_shape"):
        ConvGenerator(shape)


@pytest.mark.parametrize("shape", [(28, 28), (0, 28, 28)])
def test_networks_refuse_malformed_shapes(shape):
    with pytest.raises(ValueError, match="image_shape"):
        MLPDiscriminator(10, shape)


def test_weight_norm_layers_compute_g_times_unit_direction():
    layer = WNLinear(5, 3)
    with torch.no_grad():
        layer.g.copy_(torch.tensor([1.0, 2.0, 3.0]))
        layer.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.randn(4, 5)
    weight = layer.g[:, None] * layer.v / layer.v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(layer(x), x @ weight.T + layer.bias)

    conv = WNConv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 5, 5)
    weight = conv.v / conv.v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, weight, conv.bias, padding=1))


def test_data_dependent_init_normalises_each_layer_on_the_batch():
    d = MLPDiscriminator(10, (1, 8, 8), hidden=(32, 16), input_noise=0, hidden_noise=0)
    x = torch.rand(64, 1, 8, 8)
    init_weight_norm_from_data(d, x)
    layers = [m for m in d.modules() if isinstance(m, WNLinear)]
    outputs = []
    handles = [layer.register_forward_hook(lambda m, i, o: outputs.append(o)) for layer in layers]
    d(x)
    for h in handles:
        h.remove()
    for layer, out in zip(layers, outputs, strict=True):
        torch.testing.assert_close(out.mean(0), torch.zeros(out.shape[1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(out.std(0), torch.full((out.shape[1],), layer.init_scale), atol=1e-4, rtol=0)


def test_fixed_scale_is_a_buffer_not_a_parameter():
    layer = WNLinear(5, 3, train_scale=False)
    assert "g" in dict(layer.named_buffers()) and "g" not in dict(layer.named_parameters())
    assert "g" in layer.state_dict()
    # OpenAI: only the output layer trains its scale, in the MLP and the conv discriminator alike
    for d in MLPDiscriminator(10, (1, 8, 8), hidden=(16, 8)), ConvDiscriminator(10, (1, 32, 32), width=(8, 16)):
        trained_scales = [name for name, _ in d.named_parameters() if name.endswith(".g")]
        assert trained_scales == ["classifier.g"]
        hidden = [m for m in d.modules() if isinstance(m, (WNLinear, WNConv2d)) and m is not d.classifier]
        assert all("g" in dict(m.named_buffers()) for m in hidden) and len(hidden) in (2, 9)


def test_gaussian_noise_in_bf16_is_standard_normal_noise_rounded_to_bf16():
    from lit_ssgan.models.layers import GaussianNoise

    x = torch.zeros(300, 1000, dtype=torch.bfloat16)
    torch.manual_seed(0)
    noisy = GaussianNoise(0.5)(x)
    torch.manual_seed(0)
    assert noisy.dtype == torch.bfloat16
    assert torch.equal(noisy, torch.add(x, torch.randn(300, 1000).to(torch.bfloat16), alpha=0.5))
    assert abs(noisy.float().std().item() - 0.5) < 0.01


def test_pooled_noise_is_a_window_of_standard_normals_at_an_offset_from_pythons_rng_read_from_no_tensor():
    from lit_ssgan.callbacks.step_counts import DispatchCount
    from lit_ssgan.models.layers import GaussianNoise, noise_pool

    layer = GaussianNoise(0.5, pooled=True)
    x = torch.zeros(300, 1000)
    pool = noise_pool(x.device, x.dtype)  # drawn once per process
    random.seed(0)
    with DispatchCount() as count:
        first, second = layer(x), layer(x)
    assert count.reads == 0 and sum(count.ops.values()) == 2 * 2  # per call: the window (a view) and the add
    random.seed(0)
    assert torch.equal(layer(x), first)  # reproducible from the seed, as fresh noise is
    assert not torch.equal(first, second)
    # the window starts at one of the places holding its first value (a value may recur in 2^24)
    starts = torch.nonzero(pool == first.flatten()[0] / 0.5).flatten().tolist()
    assert any(torch.equal(first.flatten(), 0.5 * pool[s : s + x.numel()]) for s in starts)
    assert abs(first.std().item() - 0.5) < 0.01 and abs(first.mean().item()) < 0.01
    half = layer(x.bfloat16())
    assert half.dtype == torch.bfloat16 and abs(half.float().std().item() - 0.5) < 0.01
    layer.eval()
    assert torch.equal(layer(x), x)


WEIGHT_NORM_LAYERS = [
    pytest.param(lambda: WNLinear(6, 4), (5, 6), id="linear"),
    pytest.param(lambda: WNConv2d(2, 3, 3, padding=1), (2, 2, 5, 5), id="conv"),
    pytest.param(lambda: WNConv2d(2, 3, 3, stride=2, padding=1), (2, 2, 6, 6), id="strided-conv"),
    pytest.param(lambda: WNConvTranspose2d(3, 2), (2, 3, 4, 4), id="transposed-conv"),
]


def _reference_weight_norm(layer, x, v, g, bias):
    """The layer's output written with autograd's own ops: the gradients to compare against."""
    inverse = 1 / torch.linalg.vector_norm(v, dim=layer.norm_dims)
    return layer.op(x, v) * (g * inverse).view(layer.out_view) + bias.view(layer.out_view)


@pytest.mark.parametrize(("make", "x_shape"), WEIGHT_NORM_LAYERS)
def test_weight_norm_gradients_match_autograd_through_the_norm(make, x_shape):
    torch.manual_seed(0)
    layer = make().double()  # the two terms of v's gradient nearly cancel: compare in float64
    with torch.no_grad():
        layer.g.uniform_(0.5, 2.0)
        layer.bias.normal_()
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    reference = [t.detach().clone().requires_grad_() for t in (x, layer.v, layer.g, layer.bias)]
    expected = _reference_weight_norm(layer, *reference)
    (expected * weights).sum().backward()
    torch.testing.assert_close(out, expected)
    for got, want in zip((x, layer.v, layer.g, layer.bias), reference, strict=True):
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize(("make", "x_shape"), WEIGHT_NORM_LAYERS[:2])
def test_weight_norm_backward_passes_gradcheck(make, x_shape):
    torch.manual_seed(0)
    layer = make().double()
    layer.g = torch.nn.Parameter(torch.rand_like(layer.g) + 0.5)  # a trained scale even in hidden layers
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)

    def run(x, v, g, bias):
        layer.v, layer.g, layer.bias = (torch.nn.Parameter(t) for t in (v, g, bias))
        return layer(x)

    assert torch.autograd.gradcheck(run, (x, layer.v.detach(), layer.g.detach(), layer.bias.detach()))


@pytest.mark.parametrize(("make", "x_shape"), WEIGHT_NORM_LAYERS)
def test_weight_norm_under_bf16_autocast_computes_in_bf16_and_keeps_fp32_gradients(make, x_shape):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(x_shape, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert x.grad.dtype == layer.v.grad.dtype == layer.bias.grad.dtype == torch.float32
    reference = [t.detach().clone().requires_grad_() for t in (x, layer.v, layer.g, layer.bias)]
    expected = _reference_weight_norm(layer, *reference)
    expected.square().sum().backward()
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)  # bf16 keeps 8 bits
    for got, want in zip((x, layer.v, layer.bias), (reference[0], reference[1], reference[3]), strict=True):
        assert torch.nn.functional.cosine_similarity(got.grad.flatten(), want.grad.flatten(), dim=0) > 0.999


def test_frozen_weights_compute_each_layers_norm_once_and_change_nothing():
    from lit_ssgan.models.layers import frozen_weights

    d = MLPDiscriminator(10, (1, 8, 8), hidden=(16, 8), input_noise=0, hidden_noise=0)
    x = torch.rand(4, 1, 8, 8)
    expected = d(x).logits
    calls = []
    norm = torch.linalg.vector_norm
    with frozen_weights(d), pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.linalg, "vector_norm", lambda *a, **k: calls.append(1) or norm(*a, **k))
        first = d(x).logits
        with frozen_weights(d):  # a nested block keeps the outer one's values
            second = d(x).logits
        d(x)
    assert len(calls) == 3  # three layers, three passes: one norm each
    assert torch.equal(first, expected) and torch.equal(second, expected)
    first.sum().backward()  # gradients still reach the weights
    assert d.classifier.v.grad is not None
    assert all(m._frozen is None for m in d.modules() if hasattr(m, "_frozen"))  # forgotten after the block
    with torch.no_grad():
        d.classifier.v.add_(torch.randn_like(d.classifier.v))
    assert not torch.equal(d(x).logits, expected)  # outside a block, each pass reads the weights


def test_generator_softplus_output_is_non_negative_and_unbounded_above():
    g = MLPGenerator((1, 8, 8), latent_dim=4, hidden=(8,), output="softplus")
    with torch.no_grad():
        g.net[-2].bias.fill_(5.0)  # the output layer: softplus(5 + ...) lies far above 1
    x = g(g.sample_latent(16))
    assert x.min() >= 0 and x.max() > 1
    assert MLPGenerator((1, 8, 8), latent_dim=4, hidden=(8,))(g.sample_latent(16)).max() < 1  # the sigmoid


def test_random_shift_moves_each_image_by_its_own_offset_and_passes_gradients():
    from lit_ssgan.models.layers import RandomShift

    layer = RandomShift(2)
    x = torch.rand(64, 3, 8, 9, requires_grad=True)
    torch.manual_seed(0)
    shifted = layer(x)
    padded = torch.nn.functional.pad(x.detach(), (2, 2, 2, 2))
    offsets = set()
    for image, out in zip(padded, shifted.detach(), strict=True):
        # the output is the 8x9 window of the zero-padded image at some offset in [0, 4]^2
        (match,) = [(r, c) for r in range(5) for c in range(5) if torch.equal(image[:, r : r + 8, c : c + 9], out)]
        offsets.add(match)
    assert len(offsets) > 15  # each image draws its own of the 25 offsets
    shifted.sum().backward()  # the generator learns through it: each input pixel lands once or not at all
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and x.grad.sum() > 0.6 * x.numel()
    torch.manual_seed(0)
    assert torch.equal(layer(x), shifted)  # from the global RNG: seeded, reproducible
    layer.eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(RandomShift(0).train()(x), x)


def test_random_cutout_zeroes_a_square_of_its_own_in_each_image_and_passes_gradients():
    from lit_ssgan.models.layers import RandomCutout

    layer = RandomCutout(0.5)
    x = (torch.rand(64, 3, 8, 10) + 0.1).requires_grad_()  # no pixel is 0 before the cut
    torch.manual_seed(0)
    cut = layer(x)
    squares = set()
    for image in cut.detach():
        zero = image == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # one square for all channels
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        assert zero[0].sum() == len(rows) * len(cols)  # a rectangle: a square of 4 x 5, clipped at the edges
        for index, size, side in ((rows, 4, 8), (cols, 5, 10)):  # contiguous, whole or cut by an edge
            assert torch.equal(index, torch.arange(int(index[0]), int(index[0]) + len(index)))
            assert len(index) == size or (len(index) < size and (index[0] == 0 or index[-1] == side - 1))
        squares.add((int(rows[0]), int(cols[0])))
    assert len(squares) > 20  # each image draws its own place
    kept = cut.detach() != 0
    torch.testing.assert_close(cut.detach()[kept], x.detach()[kept])  # the rest is untouched
    cut.sum().backward()  # the generator learns through the pixels kept
    assert torch.equal(x.grad, kept.float())
    torch.manual_seed(0)
    assert torch.equal(layer(x), cut)  # from the global RNG: seeded, reproducible
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(RandomCutout(0).train()(x), x)
    with pytest.raises(ConfigError, match="input_cutout"):
        RandomCutout(1.5)


def test_mlp_discriminator_shifts_its_input_only_in_training():
    torch.manual_seed(0)
    net = MLPDiscriminator(hidden=(20,), input_noise=0, hidden_noise=0, input_shift=2)
    x = torch.rand(16, 1, 28, 28)
    first, second = net(x).logits, net(x).logits
    assert not torch.allclose(first, second)
    net.eval()
    torch.testing.assert_close(net(x).logits, net.classifier(net.hidden[0](x.flatten(1))))
    with pytest.raises(ConfigError, match="input_shift"):
        MLPDiscriminator(input_shift=-1)


def test_conv_discriminator_shifts_its_input_only_in_training():
    torch.manual_seed(0)
    net = ConvDiscriminator(10, (1, 16, 16), width=(4, 8), input_shift=2)
    net.features = nn.Flatten()  # the shift alone: what reaches the features is the shifted image
    net.classifier = nn.Identity()
    x = torch.rand(16, 1, 16, 16)
    first, second = net(x).features, net(x).features
    assert not torch.equal(first, second) and not torch.equal(first, x.flatten(1))
    net.eval()
    assert torch.equal(net(x).features, x.flatten(1))
    assert torch.equal(ConvDiscriminator(10, (1, 16, 16), width=(4, 8)).input_shift.train()(x), x)  # 0: off
    with pytest.raises(ConfigError, match="input_shift"):
        ConvDiscriminator(input_shift=-1)


@pytest.mark.parametrize("make", [MLPDiscriminator, ConvDiscriminator])
def test_discriminators_cut_out_their_input_only_in_training(make):
    torch.manual_seed(0)
    net = make(10, (1, 16, 16), input_cutout=0.5)
    x = torch.rand(8, 1, 16, 16) + 0.1
    seen = []
    net.input_cutout.register_forward_hook(lambda module, inputs, output: seen.append(output))
    net(x)
    assert ((seen[-1] == 0).flatten(1).sum(1) > 0).all()  # every image lost a square
    net.eval()
    net(x)
    assert torch.equal(seen[-1], x)
    with pytest.raises(ConfigError, match="input_cutout"):
        make(10, (1, 16, 16), input_cutout=-0.1)


def test_evaluating_restores_each_modules_mode_also_after_an_exception():
    training, frozen = nn.Dropout(), nn.Dropout().eval()
    with pytest.raises(RuntimeError), evaluating(training, frozen):
        assert not training.training and not frozen.training
        raise RuntimeError("a failed evaluation")
    assert training.training and not frozen.training


def test_a_low_precision_pass_casts_the_weights_in_one_copy_into_buffers_the_layers_keep():
    from lit_ssgan.callbacks.step_counts import DispatchCount
    from lit_ssgan.models.layers import _WeightNorm, prepare

    d = ConvDiscriminator(10, (3, 16, 16), width=(8, 8))
    layers = [m for m in d.modules() if isinstance(m, _WeightNorm)]
    first = prepare(layers, torch.bfloat16)  # the first pass makes the buffers
    with DispatchCount() as count:
        second = prepare(layers, torch.bfloat16)
    assert count.ops["_foreach_copy_"] == 1 and count.ops["_to_copy"] == 0 and count.ops["empty_like"] == 0
    for a, b, layer in zip(first, second, layers, strict=True):
        assert b.weight.data_ptr() == a.weight.data_ptr() and b.weight.dtype == torch.bfloat16
        if layer.normalises_weight:  # a convolution's weight g v / |v|; a dense layer's v
            assert torch.equal(b.weight, layer.folded_weight().bfloat16())
        assert torch.equal(b.bias, layer.bias.bfloat16())
    assert all(p.weight.dtype == torch.float32 for p in prepare(layers, torch.float32))  # fp32: no copy
