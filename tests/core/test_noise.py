import numpy as np

from serving.core.noise import BLOCK, draw, draw_eps, draw_latent


def test_each_block_comes_from_its_own_generator():
    rows = draw(7, 0, 2 * BLOCK + 5, (3,))
    for b in range(3):
        n = min(BLOCK, len(rows) - b * BLOCK)
        expected = np.random.default_rng([7, b]).standard_normal((n, 3), dtype=np.float32)
        np.testing.assert_array_equal(rows[b * BLOCK:b * BLOCK + n], expected)
    assert rows.dtype == np.float32


def test_a_row_depends_only_on_seed_and_position():
    whole = draw(3, 0, 5000, (2, 4))
    for start, stop in [(0, 1), (1023, 1025), (1000, 3000), (4096, 5000), (17, 18)]:
        np.testing.assert_array_equal(draw(3, start, stop, (2, 4)), whole[start:stop])
    assert not np.array_equal(draw(4, 0, 10, (2, 4)), whole[:10])


def test_eps_and_latent_layouts():
    eps = draw_eps(5, 10, 20, n_samples=3, latent_dim=2)
    assert eps.shape == (3, 10, 2) and eps.flags.c_contiguous
    np.testing.assert_array_equal(eps, draw(5, 10, 20, (3, 2)).transpose(1, 0, 2))
    np.testing.assert_array_equal(draw_latent(5, 4, 2, temperature=0.5),
                                  np.float32(0.5) * draw(5, 0, 4, (2,)))
