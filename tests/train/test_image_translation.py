"""pix2pix and CycleGAN training: the image pool, the learning-rate decay, learning on digits."""

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina.data.datasets import load_digits
from lamina.errors import ShapeError
from lamina.models import PatchGANDiscriminator, Pix2PixGenerator, ResnetGenerator
from lamina.train import Callback, CycleGANTrainer, ImagePool, Pix2PixTrainer, linear_decay_factor


def digits_in_range() -> np.ndarray:
    """The 8x8 digits scaled to [-1, 1] (the generators end in tanh)."""
    x, _ = load_digits(size=8)
    return x.astype(np.float32) / 255 * 2 - 1


def box_blur(images: np.ndarray) -> np.ndarray:
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return (sum(padded[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)) / 9).astype(np.float32)


# -- the image pool ---------------------------------------------------------------------------------
class ReferencePool:
    """The reference code's ImagePool.query, with its two draws taken from a NumPy generator."""

    def __init__(self, pool_size, seed):
        self.pool_size, self.images, self.rng = pool_size, [], np.random.default_rng(seed)

    def query(self, images):
        out = []
        for image in images:
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                random_id = self.rng.integers(0, self.pool_size)
                out.append(self.images[random_id])
                self.images[random_id] = image
            else:
                out.append(image)
        return np.stack(out)


def test_image_pool_fills_first_then_swaps_half():
    pool = ImagePool(50, seed=0)
    batches = [np.full((5, 2, 2, 1), 5 * k + i, np.float32) + np.arange(5)[:, None, None, None]
               for k, i in enumerate(range(10))]
    for batch in batches:                        # 50 images: every one comes back as it went in
        assert np.array_equal(pool.query(batch), batch)
    assert len(pool) == 50
    swapped, stored_before = 0, {float(im[0, 0, 0]) for im in pool.images}
    for value in range(1000, 3000):
        image = np.full((1, 2, 2, 1), value, np.float32)
        returned = pool.query(image)
        assert returned.shape == image.shape and len(pool) == 50
        if returned[0, 0, 0, 0] != value:
            swapped += 1
            assert float(returned[0, 0, 0, 0]) in stored_before       # an older image, given back
            assert any(im[0, 0, 0] == value for im in pool.images)    # the new one took its place
            stored_before.discard(float(returned[0, 0, 0, 0]))
            stored_before.add(float(value))
        else:
            assert all(im[0, 0, 0] != value for im in pool.images)
    assert 900 < swapped < 1100                                      # 2000 draws at 1/2: sd 22


def test_image_pool_follows_the_reference_rule():
    rng = np.random.default_rng(3)
    ours, reference = ImagePool(4, seed=7), ReferencePool(4, seed=7)
    for _ in range(30):
        batch = rng.standard_normal((3, 2, 2, 1))
        assert np.array_equal(ours.query(batch), reference.query(batch))
    batch = rng.standard_normal((3, 2, 2, 1))
    assert np.array_equal(ImagePool(0).query(batch), batch)
    with pytest.raises(ValueError, match="pool_size must be an int >= 0"):
        ImagePool(-1)


# -- the learning-rate schedule ---------------------------------------------------------------------
def test_linear_decay_matches_the_reference_rule():
    n_epochs, n_epochs_decay, epoch_count = 3, 4, 1

    def lambda_rule(epoch):   # networks.get_scheduler, lr_policy 'linear'
        return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)

    factors = [linear_decay_factor(e, n_epochs, n_epochs_decay) for e in range(7)]
    assert factors == [lambda_rule(e) for e in range(7)]
    assert factors == pytest.approx([1, 1, 1, 0.8, 0.6, 0.4, 0.2])


class LearningRates(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append((self.trainer.g_optimizer.lr, self.trainer.d_optimizer.lr))


# -- pix2pix ----------------------------------------------------------------------------------------
def test_pix2pix_learns_to_deblur_digits():
    images = digits_in_range()
    blurred = box_blur(images)
    train, held_out = slice(0, 600), slice(1000, 1300)
    lamina.manual_seed(0)
    generator = Pix2PixGenerator(1, num_downs=3, ngf=16, norm="batch")
    discriminator = PatchGANDiscriminator(ndf=8, n_layers=1, norm="batch")
    rates = LearningRates()
    trainer = Pix2PixTrainer(generator, discriminator, lr=2e-3, n_epochs=4, n_epochs_decay=2, callbacks=[rates])
    history = trainer.fit(blurred[train], images[train], batch_size=32, seed=0)
    assert len(history["g_l1"]) == 6 and history["g_l1"][-1] < 0.5 * history["g_l1"][0]
    assert [g for g, _ in rates.seen] == pytest.approx([2e-3] * 4 + [2e-3 * 2 / 3, 2e-3 / 3])
    assert not generator.training
    input_l1 = np.abs(blurred[held_out] - images[held_out]).mean()
    output_l1 = np.abs(generator(blurred[held_out]).numpy() - images[held_out]).mean()
    assert output_l1 < 0.6 * input_l1, (output_l1, input_l1)     # measured: 0.164 against 0.335


def test_pix2pix_trainer_checks_its_data():
    generator = Pix2PixGenerator(1, num_downs=2, ngf=2)
    discriminator = PatchGANDiscriminator(ndf=2, n_layers=1)
    trainer = Pix2PixTrainer(generator, discriminator)
    a = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(ShapeError, match="as many images"):
        trainer.fit(a, a[:3], epochs=1)
    with pytest.raises(ShapeError, match="the targets b are"):
        trainer.fit(a, np.zeros((4, 8, 8, 3), np.float32), epochs=1)
    with pytest.raises(ValueError, match="give epochs, or n_epochs"):
        trainer.fit(a, a)
    with pytest.raises(ValueError, match="gan_mode must be one of"):
        Pix2PixTrainer(generator, discriminator, gan_mode="hinge")
    with pytest.raises(ValueError, match="two different models"):
        Pix2PixTrainer(generator, generator)


# -- CycleGAN ---------------------------------------------------------------------------------------
def test_cyclegan_cycle_loss_falls():
    images = digits_in_range()
    a, b = images[:96], -images[96:192]                       # B: digits in negative
    lamina.manual_seed(0)
    g_ab, g_ba = ResnetGenerator(1, ngf=4, n_blocks=1), ResnetGenerator(1, ngf=4, n_blocks=1)
    d_a = PatchGANDiscriminator(ndf=4, n_layers=1, norm="instance")
    d_b = PatchGANDiscriminator(ndf=4, n_layers=1, norm="instance")
    trainer = CycleGANTrainer(g_ab, g_ba, d_a, d_b, lr=2e-3, pool_size=8, seed=0)
    history = trainer.fit(a, b, epochs=4, batch_size=8, seed=0)
    assert set(history) == {"d_a", "d_b", "g_gan", "cycle", "identity"}
    assert history["cycle"][-1] < 0.85 * history["cycle"][0], history["cycle"]
    assert history["identity"][-1] < history["identity"][0]
    assert len(trainer.pool_a) == len(trainer.pool_b) == 8


def test_cyclegan_costs_follow_the_formula():
    lamina.manual_seed(0)
    g_ab, g_ba = ResnetGenerator(1, ngf=2, n_blocks=1), ResnetGenerator(1, ngf=2, n_blocks=1)
    d_a = PatchGANDiscriminator(ndf=2, n_layers=1, norm="instance")
    d_b = PatchGANDiscriminator(ndf=2, n_layers=1, norm="instance")
    trainer = CycleGANTrainer(g_ab, g_ba, d_a, d_b, lambda_a=3.0, lambda_b=5.0, lambda_identity=0.5)
    rng = np.random.default_rng(0)
    a, b = (lamina.tensor(rng.uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)) for _ in range(2))
    _, parts, fake_b, fake_a = trainer.generator_cost(a, b)

    def l1(x, y):
        return np.abs(x - y).mean()

    an, bn = a.numpy(), b.numpy()
    fb, fa = fake_b.numpy(), fake_a.numpy()
    cycle = 3.0 * l1(g_ba(fake_b).numpy(), an) + 5.0 * l1(g_ab(fake_a).numpy(), bn)
    identity = 0.5 * (3.0 * l1(g_ba(a).numpy(), an) + 5.0 * l1(g_ab(b).numpy(), bn))
    gan = ((d_b(fb).numpy() - 1) ** 2).mean() + ((d_a(fa).numpy() - 1) ** 2).mean()
    assert parts == pytest.approx({"g_gan": gan, "cycle": cycle, "identity": identity}, rel=1e-5)
    with pytest.raises(ShapeError, match="generator_ab turns"):
        trainer.fit(np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, 8, 8, 2), np.float32), epochs=1)
    with pytest.raises(ValueError, match="four different models"):
        CycleGANTrainer(g_ab, g_ab, d_a, d_b)


def test_readme_example_runs():

    _, names = run_readme_section("Image-to-image GANs: pix2pix, CycleGAN and StyleGAN2's blocks")
    assert names["l1"] < 0.7 * np.abs(names["blurred"][1000:1300] - names["digits"][1000:1300]).mean()
    assert names["samples"].shape == (4, 16, 16, 1)
