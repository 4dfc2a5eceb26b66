import math

import pytest
import torch
import torch.nn.functional as F

from lit_ssgan import losses
from lit_ssgan.consistency import MeanTeacher, PiModel
from lit_ssgan.losses import sigmoid_kl_with_logits
from lit_ssgan.parts import built, config_of

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


def test_pull_away_is_the_mean_squared_cosine_of_the_distinct_pairs():
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=DOUBLE)
    # cosines: (1, 2) 1/sqrt(2), (1, 3) 0, (2, 3) 1/sqrt(2); squared 0.5, 0, 0.5; each pair twice of 6
    assert losses.pull_away(features).item() == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert losses.pull_away(torch.full((4, 3), 2.0)).item() == pytest.approx(1.0)  # one image four times
    assert losses.pull_away(torch.ones(2, 3, dtype=torch.bfloat16)).dtype == torch.float32
    with pytest.raises(ValueError, match="at least two"):
        losses.pull_away(torch.ones(1, 3))


def test_pull_away_drives_generated_features_of_one_image_apart():
    torch.manual_seed(0)
    features = (torch.ones(8, 16) + 0.01 * torch.randn(8, 16)).requires_grad_()
    optimizer = torch.optim.SGD([features], lr=10.0)
    before = losses.pull_away(features).item()
    for _ in range(20):
        optimizer.zero_grad()
        losses.pull_away(features).backward()
        optimizer.step()
    assert before > 0.99 and losses.pull_away(features).item() < 0.5 * before


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
        (losses.pull_away, (fake,)),
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


def test_pseudo_label_is_the_cross_entropy_against_the_sure_targets_only():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=DOUBLE, requires_grad=True)
    # image 1: the target is sure of class 2; image 2: sure of class 1; image 3: undecided (left out)
    target = torch.tensor([[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [1.0, 0.0, 0.0]], dtype=DOUBLE, requires_grad=True)
    loss = losses.pseudo_label(logits, target, 0.95)
    each = F.cross_entropy(logits, torch.tensor([2, 1, 0]), reduction="none")
    torch.testing.assert_close(loss, (each[0] + each[1]) / 3)
    loss.backward()
    assert target.grad is None  # the target gets no gradient
    assert logits.grad is not None and torch.all(logits.grad[2] == 0)  # the undecided image: none either
    assert losses.pseudo_label(logits, target, 1.0).item() == 0.0  # no target that sure


def random_heads(n: int = 6, k: int = 4) -> losses.Heads:
    return losses.Heads(torch.randn(n, k, dtype=DOUBLE), torch.randn(n, dtype=DOUBLE))


def test_discriminator_loss_weighs_each_term_by_its_own_weight():
    torch.manual_seed(0)
    labeled, unlabeled, fake, again = random_heads(), random_heads(), random_heads(), random_heads()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = losses.DiscriminatorLoss(
        unlabeled_weight=0.5, unlabeled_entropy_weight=0.3, d_label_smooth=0.1, consistency=PiModel(weight=2.0)
    )
    parts = loss(labeled, labels, unlabeled, fake, again)
    terms = {
        "d_loss_class": F.cross_entropy(labeled.predicted, labels),
        "d_loss_real": sigmoid_kl_with_logits(unlabeled.gan, 0.9).mean(),
        "d_loss_fake": F.binary_cross_entropy_with_logits(fake.gan, torch.zeros_like(fake.gan)),
        "d_entropy": losses.conditional_entropy(unlabeled.predicted),
        "d_consistency": losses.consistency(unlabeled.predicted, again.predicted),
    }
    assert parts.terms.keys() == terms.keys()
    for name, value in terms.items():
        torch.testing.assert_close(parts.terms[name], value, msg=name)
    want = terms["d_loss_class"] + 0.5 * (terms["d_loss_real"] + terms["d_loss_fake"])
    want = want + 0.3 * terms["d_entropy"] + 2.0 * terms["d_consistency"]
    torch.testing.assert_close(parts.total, want)


def test_pseudo_label_threshold_makes_the_consistency_term_fixmatch_s():
    torch.manual_seed(0)
    labeled, unlabeled, fake, again = random_heads(), random_heads(), random_heads(), random_heads()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = losses.DiscriminatorLoss(consistency=PiModel(2.0, pseudo_label_threshold=0.4))
    parts = loss(labeled, labels, unlabeled, fake, again)
    # the Π-model's second pass (FixMatch's strong view) learns the first's class
    want = losses.pseudo_label(again.predicted, unlabeled.predicted, 0.4)
    assert want > 0  # some targets reach 0.4
    torch.testing.assert_close(parts.terms["d_consistency"], want)
    # the Mean Teacher's student (the first pass) learns the teacher's
    teacher = losses.DiscriminatorLoss(consistency=MeanTeacher(2.0, pseudo_label_threshold=0.4))
    want = losses.pseudo_label(unlabeled.predicted, again.predicted, 0.4)
    torch.testing.assert_close(teacher(labeled, labels, unlabeled, fake, again).terms["d_consistency"], want)
    with pytest.raises(ValueError, match="pseudo_label_threshold must be a float"):
        MeanTeacher(1.0, pseudo_label_threshold=2.0)


def test_the_pi_model_s_strong_view_cuts_a_square_from_each_image_of_the_second_look():
    images = torch.rand(16, 1, 8, 8) + 0.1  # no pixel is 0 before the cut
    assert PiModel().second_look(images) is images and MeanTeacher().second_look(images) is images
    torch.manual_seed(0)
    strong = PiModel(strong_cutout=0.5).second_look(images)
    cut = strong == 0
    assert (cut.flatten(1).sum(1) >= 4).all() and (cut.flatten(1).sum(1) <= 16).all()  # a 4x4 square, or its part
    torch.testing.assert_close(strong[~cut], images[~cut])
    with pytest.raises(ValueError, match="strong_cutout must be a float"):
        PiModel(strong_cutout=1.5)


def test_the_entropy_term_is_minimised_so_the_prediction_commits():
    unlabeled = losses.Heads(torch.tensor([[0.5, 0.0, -0.5]], dtype=DOUBLE, requires_grad=True), torch.zeros(1))
    other = losses.Heads(torch.zeros(1, 3, dtype=DOUBLE), torch.zeros(1, dtype=DOUBLE))
    with_term = losses.DiscriminatorLoss(unlabeled_entropy_weight=1.0)(other, torch.tensor([0]), unlabeled, other)
    without = losses.DiscriminatorLoss()(other, torch.tensor([0]), unlabeled, other)
    torch.testing.assert_close(with_term.total - without.total, losses.conditional_entropy(unlabeled.predicted))
    (grad,) = torch.autograd.grad(with_term.total, unlabeled.predicted)
    stepped = unlabeled.predicted.detach() - 0.1 * grad  # a descent step on D's loss ...
    assert losses.conditional_entropy(stepped) < losses.conditional_entropy(unlabeled.predicted)  # ... commits
    assert stepped.argmax(1).item() == 0


def test_optional_terms_are_left_out_at_weight_zero_and_the_second_pass_asked_for_only_then():
    plain = losses.DiscriminatorLoss()
    assert not plain.needs_second_pass
    assert set(
        plain(*[random_heads()] * 1, torch.zeros(6, dtype=torch.long), random_heads(), random_heads()).terms
    ) == {
        "d_loss_class",
        "d_loss_real",
        "d_loss_fake",
    }
    assert losses.DiscriminatorLoss(consistency=PiModel(0.1)).needs_second_pass
    assert not losses.DiscriminatorLoss(consistency=MeanTeacher(0.1)).needs_second_pass  # the teacher's pass
    regression = losses.DiscriminatorLoss().for_task(classification=False)
    values = losses.Heads(torch.tensor([1.0, 2.0]), torch.zeros(2))
    assert set(regression(values, torch.tensor([1.0, 4.0]), values, values).terms) >= {"d_loss_mse"}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: losses.FeatureMatching("L1"), "g_loss.distance must be one of 'absolute', 'squared'"),
        (lambda: losses.SigmoidKL(target_prob=1.2), "g_loss.target_prob must be a float"),
        (lambda: losses.FeatureMatching(pull_away_weight=-1.0), "g_loss.pull_away_weight must be 0 or more"),
        (lambda: losses.DiscriminatorLoss(d_label_smooth=-0.1), "d_loss.d_label_smooth must be a float"),
        (lambda: losses.DiscriminatorLoss(unlabeled_weight=-1.0), "d_loss.unlabeled_weight must be 0 or more"),
        (lambda: losses.DiscriminatorLoss(unlabeled_entropy_weight=1.0).for_task(False), "needs classification"),
        (lambda: losses.DiscriminatorLoss(consistency=PiModel(1.0)).for_task(False), "needs classification"),
        (lambda: PiModel(weight=0.0), "consistency weight must be > 0"),
        (lambda: MeanTeacher(decay=1.5), "decay must be a float"),
        (lambda: losses.DiscriminatorLoss(consistency={"class_path": "os.system"}), "os.system is not a Consistency"),
    ],
)
def test_loss_options_are_refused_by_name_when_the_loss_is_built(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_generator_loss_sigmoid_kl_and_feature_matching():
    fake_gan = torch.tensor([0.0, 2.0], dtype=DOUBLE)
    kl = losses.SigmoidKL(target_prob=0.9)(None, None, fake_gan)
    torch.testing.assert_close(kl.total, sigmoid_kl_with_logits(fake_gan, 0.9).mean())
    real, fake = torch.randn(5, 3, dtype=DOUBLE), torch.randn(7, 3, dtype=DOUBLE)
    absolute = losses.FeatureMatching(distance="absolute")(real, fake, None)
    torch.testing.assert_close(absolute.total, (real.mean(0) - fake.mean(0)).abs().mean())
    assert list(absolute.terms) == ["g_loss"]
    spread = losses.FeatureMatching(pull_away_weight=0.5)(real, fake, None)
    torch.testing.assert_close(spread.terms["g_pull_away"], losses.pull_away(fake))
    torch.testing.assert_close(spread.total, spread.terms["g_loss"] + 0.5 * losses.pull_away(fake))


def test_a_part_is_kept_as_its_class_and_arguments_and_rebuilt_from_them():
    loss = losses.DiscriminatorLoss(
        0.5, d_label_smooth=0.1, consistency=MeanTeacher(0.3, decay=0.9, pseudo_label_threshold=0.8)
    )
    config = config_of(loss)
    assert config == {
        "class_path": "lit_ssgan.losses.DiscriminatorLoss",
        "init_args": {
            "unlabeled_weight": 0.5,
            "unlabeled_entropy_weight": 0.0,
            "d_label_smooth": 0.1,
            "consistency": {
                "class_path": "lit_ssgan.consistency.MeanTeacher",
                "init_args": {"weight": 0.3, "pseudo_label_threshold": 0.8, "decay": 0.9},
            },
        },
    }
    rebuilt = built(config, losses.DiscriminatorLoss, "d_loss")
    assert isinstance(rebuilt.consistency, MeanTeacher) and config_of(rebuilt) == config
    assert rebuilt.weights == loss.weights
