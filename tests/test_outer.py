"""The compiled outer-product update (``OuterProduct.add_to``) against torch's ``addmm_``."""

import contextlib

import pytest
import torch

from npusim.core.outer import OuterProduct, column_sums, kept_transpose
from npusim.devices.ideal import add_exact


@contextlib.contextmanager
def _torch_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _factors(m, n, rank, seed, zero_rows=0.5):
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(rank, m, generator=g)
    left[:, torch.rand(m, generator=g) < zero_rows] = 0.0  # blank pixels: all-zero rows
    left[torch.rand(rank, m, generator=g) < 0.3] = 0.0  # and scattered zeros
    right = torch.randn(rank, n, generator=g) * 1e-2
    return left, right


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("m", "n", "rank"), [(784, 1024, 16), (1568, 1024, 5), (50, 16, 1), (33, 100, 37)]
)
def test_compiled_update_equals_addmm_bit_for_bit(m, n, rank, threads):
    with _torch_threads(threads):
        left, right = _factors(m, n, rank, seed=m + rank)
        p = torch.randn(m, n, generator=torch.Generator().manual_seed(1))
        ref = p.clone().addmm_(left.t(), right)
        version = p._version
        OuterProduct(left, right).add_to(p)
        assert torch.equal(p, ref)
        assert p._version > version  # in-place change seen by the caches keyed on versions


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("m", "n", "rank"), [(300, 64, 6), (1568, 1024, 5), (1568, 1024, 9)])
def test_nonneg_update_clamps_and_keeps_the_column_sums(m, n, rank, threads):
    with _torch_threads(threads):
        left, right = _factors(m, n, rank, seed=3)
        left[0] = 1.0  # the DRN's ΔV² row term reaches every row
        p = torch.rand(m, n) * 0.01
        ref = p.clone().addmm_(left.t(), right).clamp_(min=0.0)
        add_exact(p, OuterProduct(left, right), signed=False)
        assert torch.equal(p, ref)
        assert (p >= 0).all()
        sums = column_sums(p)
        assert torch.equal(sums, p.new_ones(m) @ p)  # the same sums, in the same order
        p.add_(1.0)  # changed since: computed afresh
        assert torch.equal(column_sums(p), p.new_ones(m) @ p)


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_row_blocks_on_any_number_of_parts_give_the_one_block_bits(parts):
    """Each row block's column sums are added in block order (by the thread that wrote the
    block): any number of blocks, even more than there are threads, gives one block's bits."""
    import numpy as np

    from npusim.core._outer_kernel import add_outer

    left, right = _factors(1000, 48, 7, seed=parts)
    left[0] = 1.0
    start = torch.rand(1000, 48, generator=torch.Generator().manual_seed(2)) * 0.01
    out = {}
    for k in (1, parts):
        p, sums = start.clone(), np.empty(48, np.float32)
        add_outer(p.numpy(), left.numpy(), right.numpy(), True, sums, k)
        out[k] = p, sums
    assert torch.equal(out[1][0], out[parts][0])
    assert np.array_equal(out[1][1], out[parts][1])
    assert np.array_equal(out[parts][1], (out[parts][0].new_ones(1000) @ out[parts][0]).numpy())


def _rule(p, left, right, nonneg=False):
    """The compiled update's rule per element, emulated in float64: the rank terms in order
    (a product, then fused multiply-adds rounded once to float32), added to ``p`` last."""
    lf, rf = left.double(), right.double()
    acc = (lf[0][:, None] * rf[0][None, :]).float()
    for k in range(1, left.shape[0]):
        acc = (lf[k][:, None] * rf[k][None, :] + acc.double()).float()
    out = p + acc
    return out.clamp(min=0.0) if nonneg else out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("m", "n", "rank"), [(1024, 10, 32), (1024, 10, 10), (40, 3, 7)])
def test_narrow_update_is_the_same_rule_on_the_transpose(m, n, rank, threads):
    with _torch_threads(threads):
        g = torch.Generator().manual_seed(m + n + rank)
        left, right = torch.randn(rank, m, generator=g), torch.randn(rank, n, generator=g)
        for nonneg in (False, True):
            p = torch.rand(m, n, generator=g) * 0.1
            want = _rule(p, left, right * 0.05, nonneg)
            version = p._version
            add_exact(p, OuterProduct(left, right * 0.05), signed=not nonneg)
            assert torch.equal(p, want)
            assert p._version > version
            if nonneg:
                assert torch.equal(column_sums(p), p.new_ones(m) @ p)
            kept = kept_transpose(p)  # the update's transpose, handed to the next read of pᵀ
            assert kept is not None and kept.is_contiguous() and torch.equal(kept, p.t())
        assert _rule(p, left, right).sub(p.addmm_(left.t(), right)).abs().max() < 1e-5
        assert kept_transpose(p) is None  # p changed since: nothing stale is handed out


def test_a_network_reads_the_transpose_the_update_kept_and_no_stale_one():
    from npusim.circuits import DeepHopfield

    net = DeepHopfield([20, 64, 10], seed=0)
    w = net.weights[1]
    g = torch.Generator().manual_seed(3)
    OuterProduct(torch.rand(8, 64, generator=g), torch.randn(8, 10, generator=g)).add_to(w)
    assert net._transposed(1) is kept_transpose(w)
    assert torch.equal(net._transposed(1), w.t())
    w.mul_(0.5)  # changed in place: neither the kept nor a cached transpose may be read
    assert kept_transpose(w) is None
    assert torch.equal(net._transposed(1), w.t())


def test_wide_update_follows_the_rule_too_and_small_or_float64_ones_use_addmm():
    left, right = _factors(64, 32, 6, seed=9, zero_rows=0.0)
    left[left == 0] = 0.5  # no zero terms: the emulation adds every one
    p = torch.randn(64, 32)
    want = _rule(p, left, right)
    OuterProduct(left, right).add_to(p)
    assert torch.equal(p, want)
    for p, left, right in [
        (torch.randn(12, 10), torch.randn(3, 12), torch.randn(3, 10)),  # both sides < 16
        (torch.randn(40, 32, dtype=torch.float64),)
        + tuple(t.double() for t in _factors(40, 32, 4, seed=5)),
    ]:
        ref = p.clone().addmm_(left.t(), right)
        OuterProduct(left, right).add_to(p)
        assert torch.equal(p, ref)
