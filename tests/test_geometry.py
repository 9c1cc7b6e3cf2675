"""Sampler coordinates of the change-point levels: the blends at the first and last checkpoint."""

import numpy as np
import pytensor.tensor as pt

from phasebayes.models.geometry import levels_from_end_values


def _transform(start, end, tau, width, mask):
    a, b, log_jac = levels_from_end_values(pt.as_tensor(start), pt.as_tensor(end), pt.as_tensor(tau),
                                           pt.as_tensor(width), np.asarray(mask, dtype=float), pt)
    return a.eval(), b.eval(), float(log_jac.eval())


def test_end_values_invert_and_jacobian():
    tau, width = np.array([0.9, 0.5]), np.array([0.3, 0.05])
    a, b = np.array([-0.4, 1.0]), np.array([0.8, -2.0])
    s0 = 1 / (1 + np.exp(tau / width))
    s1 = 1 / (1 + np.exp(-(1 - tau) / width))
    start, end = (1 - s0) * a + s0 * b, (1 - s1) * a + s1 * b
    got_a, got_b, log_jac = _transform(start, end, tau, width, [1, 1])
    np.testing.assert_allclose(got_a, a, atol=1e-10)
    np.testing.assert_allclose(got_b, b, atol=1e-10)
    # an unfinished transition (tau 0.9 of the run): the end value is far from the asymptote b
    assert abs(end[0] - b[0]) > 0.3
    # log |d(a, b)/d(start, end)| against finite differences, per order parameter
    h, jac = 1e-6, 0.0
    for k in range(2):
        cols = []
        for d_start, d_end in ((h, 0.0), (0.0, h)):
            st, en = start.copy(), end.copy()
            st[k] += d_start
            en[k] += d_end
            ak, bk, _ = _transform(st, en, tau, width, [1, 1])
            cols.append([(ak[k] - got_a[k]) / h, (bk[k] - got_b[k]) / h])
        jac += np.log(abs(np.linalg.det(np.array(cols))))
    assert abs(log_jac - jac) < 1e-4
    # mask 0 (ordinal order parameters): the coordinates are the levels themselves, no Jacobian
    a0, b0, lj0 = _transform(start, end, tau, width, [0, 0])
    np.testing.assert_allclose(a0, start)
    np.testing.assert_allclose(b0, end)
    assert lj0 == 0.0
