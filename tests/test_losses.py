import math

import pytest
import torch
import torch.nn.functional as F

from lit_ssgan import losses
from lit_ssgan.losses import sigmoid_kl_with_logits

DOUBLE = torch.float64


def kl_closed_form(x: float, t: float) -> float:
    """KL(Bernoulli(t) || Bernoulli(sigmoid(x)))."""
    p = 1 / (1 + math.exp(-x))
    return sum(a * math.log(a / b) for a, b in ((t, p), (1 - t, 1 - p)) if a > 0)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.5, 0.75, 0.9, 1.0])
def test_sigmoid_kl_matches_closed_form(t):
    xs = [-6.0, -1.5, 0.0, 0.3, 2.0, 7.0]
    got = sigmoid_kl_with_logits(torch.tensor(xs, dtype=DOUBLE), t)
    want = torch.tensor([kl_closed_form(x, t) for x in xs], dtype=DOUBLE)
    torch.testing.assert_close(got, want)


def test_sigmoid_kl_minimum_is_zero_at_the_target():
    t = 0.8
    at_target = torch.tensor([math.log(t / (1 - t))], dtype=DOUBLE)  # sigmoid(x) = t
    assert sigmoid_kl_with_logits(at_target, t).item() == pytest.approx(0.0, abs=1e-12)
    assert (sigmoid_kl_with_logits(torch.linspace(-5, 5, 11, dtype=DOUBLE), t) >= -1e-12).all()


def test_sigmoid_kl_is_bce_minus_entropy():
    x, t = torch.randn(7, dtype=DOUBLE), 0.3
    bce = F.binary_cross_entropy_with_logits(x, torch.full_like(x, t), reduction="none")
    entropy = -(t * math.log(t) + (1 - t) * math.log(1 - t))
    torch.testing.assert_close(sigmoid_kl_with_logits(x, t), bce - entropy)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None, True, torch.tensor(0.5)])
def test_sigmoid_kl_refuses_bad_targets(bad):
    with pytest.raises(ValueError, match="targets"):
        sigmoid_kl_with_logits(torch.zeros(3), bad)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_sigmoid_kl_finite_for_huge_logits(t):
    x = torch.tensor([-1e4, -1e3, 1e3, 1e4], requires_grad=True)
    value = sigmoid_kl_with_logits(x, t)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(x.grad).all()
    # far on the right side the KL is ~0 and the gradient vanishes; on the wrong side it is linear
    if t == 1.0:
        assert value[-1].item() == pytest.approx(0.0, abs=1e-6)
        assert value[0].item() == pytest.approx(1e4, rel=1e-6)


def test_gan_logits_implicit_fake_logit_zero():
    logits = torch.randn(5, 10, dtype=DOUBLE)
    p_real = torch.sigmoid(losses.gan_logits(logits))
    z = logits.exp().sum(1)
    torch.testing.assert_close(p_real, z / (z + 1))  # the fake class has logit 0: exp(0) = 1


def test_gan_logits_explicit_fake_column():
    logits = torch.randn(5, 11, dtype=DOUBLE)
    p_real = torch.sigmoid(losses.gan_logits(logits, explicit_fake=True))
    torch.testing.assert_close(p_real, logits.softmax(1)[:, :10].sum(1))
    assert losses.class_logits(logits, explicit_fake=True).shape == (5, 10)
    assert losses.class_logits(logits[:, :10]).shape == (5, 10)


def test_gan_logits_finite_for_huge_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    for explicit in (False, True):
        assert torch.isfinite(losses.gan_logits(logits, explicit)).all()


def test_feature_matching_values():
    real = torch.tensor([[0.0, 2.0], [2.0, 2.0]])  # batch mean (1, 2)
    fake = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # batch mean (0, 0.5)
    assert losses.feature_matching(real, fake, "absolute").item() == pytest.approx((1 + 1.5) / 2)
    assert losses.feature_matching(real, fake, "squared").item() == pytest.approx((1 + 2.25) / 2)
    with pytest.raises(ValueError, match="distance"):
        losses.feature_matching(real, fake, "cosine")


def test_discriminator_and_generator_terms():
    gan = torch.tensor([-2.0, 0.0, 3.0], dtype=DOUBLE)
    # d_loss_fake: BCE against 0 is softplus(x)
    torch.testing.assert_close(losses.d_loss_fake(gan), F.softplus(gan).mean())
    # d_loss_real without smoothing: BCE against 1 is softplus(-x)
    torch.testing.assert_close(losses.d_loss_real(gan), F.softplus(-gan).mean())
    smoothed = torch.tensor([kl_closed_form(x, 0.9) for x in gan.tolist()], dtype=DOUBLE).mean()
    torch.testing.assert_close(losses.d_loss_real(gan, d_label_smooth=0.1), smoothed)
    target = torch.tensor([kl_closed_form(x, 0.75) for x in gan.tolist()], dtype=DOUBLE).mean()
    torch.testing.assert_close(losses.g_loss_sigmoid_kl(gan, 0.75), target)
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=DOUBLE), torch.tensor([0, 1])
    want = -(logits.log_softmax(1)[[0, 1], [0, 1]]).mean()
    torch.testing.assert_close(losses.d_loss_labeled(logits, labels), want)
    # regression: the mean squared error of the values against the labels read as numbers
    values, grades = torch.tensor([0.5, 3.0], dtype=DOUBLE), torch.tensor([1, 2])
    want = torch.tensor((0.25 + 1.0) / 2, dtype=DOUBLE)
    torch.testing.assert_close(losses.d_loss_labeled(values, grades, classification=False), want)


def test_gradients_match_finite_differences():
    x = torch.randn(6, dtype=DOUBLE, requires_grad=True)
    logits = torch.randn(4, 5, dtype=DOUBLE, requires_grad=True)
    real = torch.randn(4, 3, dtype=DOUBLE)
    fake = torch.randn(4, 3, dtype=DOUBLE, requires_grad=True)
    checks = [
        (lambda v: sigmoid_kl_with_logits(v, 0.3), (x,)),
        (lambda v: losses.d_loss_real(v, 0.2), (x,)),
        (losses.d_loss_fake, (x,)),
        (lambda v: losses.g_loss_sigmoid_kl(v, 0.9), (x,)),
        (losses.gan_logits, (logits,)),
        (lambda v: losses.gan_logits(v, explicit_fake=True), (logits,)),
        (lambda v: losses.d_loss_labeled(v, torch.tensor([0, 1, 2, 4])), (logits,)),
        (lambda f: losses.feature_matching(real, f, "squared"), (fake,)),
        (losses.consistency, (logits, torch.randn(4, 5, dtype=DOUBLE, requires_grad=True))),
    ]
    for fn, inputs in checks:
        assert torch.autograd.gradcheck(fn, inputs)


def test_consistency_is_the_squared_distance_of_the_class_distributions():
    a, b = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    p, q = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(-2.0))
    expected = (0.0 + 2 * (p - q) ** 2) / 2  # image 1 agrees; image 2's two classes are swapped
    torch.testing.assert_close(losses.consistency(a, b), expected)
    torch.testing.assert_close(losses.consistency(b, a), expected)
