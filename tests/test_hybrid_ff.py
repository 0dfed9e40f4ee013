"""Hybrid networks' feed-forward blocks: digital batch normalisation and analog feed-forward
layers in the chained BP–EP estimate (against autograd), batch norm's running statistics,
where the chip holds what, architecture files, and training with them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_hybrid import _synthetic

from npusim.circuits.arch import ArchError, parse_arch, trained_layers
from npusim.circuits.block import FeedForwardLayer, HopfieldBlock
from npusim.circuits.hybrid import BatchNorm, HybridNetwork
from npusim.core.outer import dense
from npusim.learning.estimators import Backprop, EqProp

D = torch.float64


def _flat(grads: list) -> torch.Tensor:
    return torch.cat([dense(g).flatten() for g in grads])


def _net(arch: str, seed: int = 1) -> HybridNetwork:
    net = HybridNetwork(arch, (1, 8, 8), 10, seed=seed, dtype=D)
    g = torch.Generator().manual_seed(seed)
    for p in net.params():  # strong couplings; batch norms away from γ = 1, β = 0
        if p.dim() >= 2:
            p.mul_(2.0)
        else:
            p.add_(torch.rand(p.shape, generator=g, dtype=D) * 0.4 - 0.1)
    return net


@pytest.mark.parametrize(
    ("arch", "variant"),
    [
        ("conv3k3-bn-conv4k3-bn-pool|fc8|fc10", "centered"),
        ("bn-ffconv4k3-bn-pool|fc12-bn-fc10", "centered"),
        ("conv4k3-bn-pool|ff16-bn-fc12-fc10", "centered"),
        ("conv4k3-bn-pool|ff16-bn-fc12-fc10", "positive"),
    ],
)
def test_chained_gradient_through_batch_norm_and_ff_layers_matches_autograd(
    arch: str, variant: str
) -> None:
    """EqProp in each energy-based block, backprop through batch norms (batch statistics) and
    analog feed-forward layers: the gradient of the loss through the whole network at
    equilibrium (autograd through long relaxations), as a whole and per tensor for the
    feed-forward parameters."""
    torch.manual_seed(0)
    net = _net(arch)
    x = torch.rand(6, 64, dtype=D)
    t = F.one_hot(torch.arange(6) % 10, 10).to(D)
    ref = Backprop(sweeps=200)(net, x, t).grads
    sweeps = 200 if variant == "centered" else 1000
    est = EqProp(beta=1e-4, variant=variant, sweeps=sweeps)(net, x, t)
    a, b = _flat(est.grads), _flat(ref)
    assert float(F.cosine_similarity(a, b, 0)) >= 0.99
    assert float(a.norm() / b.norm()) == pytest.approx(1.0, rel=1e-2)
    ff = [bn.weight for bn in net.norms] + [bn.bias for bn in net.norms]
    ff += [
        c.weight for blk in net.blocks if isinstance(blk, FeedForwardLayer) for c in blk.couplings
    ]
    ids = {id(p) for p in ff}
    for p, g, r in zip(net.params(), est.grads, ref, strict=True):
        if id(p) in ids:  # each batch norm's γ, β and each feed-forward crossbar on its own
            assert r.norm() > 1e-6
            assert float(F.cosine_similarity(dense(g).flatten(), r.flatten(), 0)) >= 0.99
    assert est.blocks is not None and len(est.blocks) == len(net.blocks)
    for blk, phases in zip(net.blocks, est.blocks, strict=True):  # a feed-forward layer: 1 read
        assert len(phases) == 1 if isinstance(blk, FeedForwardLayer) else len(phases) > 1


def test_energy_gradient_of_batch_norm_parameters_matches_autograd() -> None:
    """``grad_difference`` differentiates the blocks' energy also through the batch norms
    between them (``γ, β`` reach ``E`` through the next block's input)."""
    net = _net("conv4k3-bn-pool|fc12-bn-fc10", seed=2)
    x = torch.rand(5, 64, dtype=D)
    state = net.relax(x, sweeps=50, train=True).state
    params = net.params()
    for p in params:
        p.requires_grad_(True)
    with torch.enable_grad():
        ref = torch.autograd.grad(net.energy(x, state, train=True).mean(), params)
    for p in params:
        p.requires_grad_(False)
    zero = [torch.zeros_like(s) for s in state]
    with torch.enable_grad():  # batch statistics, as in training
        for p in params:
            p.requires_grad_(True)
        ours = [dense(g).detach() for g in net.grad_difference(x, state, zero, 1.0)]
        for p in params:
            p.requires_grad_(False)
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones() -> None:
    net = _net("fc12-bn-fc10", seed=3)
    bn = net.norms[0]
    x = torch.rand(8, 64, dtype=D)
    t = F.one_hot(torch.arange(8) % 10, 10).to(D)
    est = EqProp(beta=0.1, sweeps=20)(net, x, t)  # one training step's estimate
    s1 = est.free.state[0]  # the first block's output, what the batch norm normalised
    assert torch.allclose(bn.running_mean, 0.1 * s1.mean(0))  # momentum 0.1, updated once
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * s1.var(0, unbiased=True))
    # the free phase's second block saw the batch's statistics
    u = (s1 - s1.mean(0)) / (s1.var(0, unbiased=False) + bn.eps).sqrt() * bn.weight + bn.bias
    assert torch.allclose(est.free.state[1], net.blocks[1].relax(u, sweeps=20).state[-1])
    # evaluation: the running statistics, the same for a sample alone or in a batch, and
    # left alone
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    rel = net.relax(x, sweeps=20)
    u = (rel.state[0] - mean) / (var + bn.eps).sqrt() * bn.weight + bn.bias
    assert torch.allclose(rel.state[1], net.blocks[1].relax(u, sweeps=20).state[-1])
    assert torch.allclose(net.relax(x[:1], sweeps=20).state[1], rel.state[1][:1])
    assert torch.equal(net.predict(x, 20), rel.state[1].argmax(1))
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    # backprop's training pass (autograd through the relaxation) uses the batch's statistics
    # and updates the running ones
    free = Backprop(sweeps=20)(net, x, t).free
    assert torch.allclose(free.state[1], est.free.state[1])
    assert torch.allclose(bn.running_mean, 0.9 * mean + 0.1 * s1.mean(0))
    assert not torch.allclose(rel.state[1], free.state[1])
    assert len(net.buffers()) == 2


def test_batch_norm_matches_torch_batch_norm_layers() -> None:
    torch.manual_seed(0)
    for shape in [(3, 4, 4), (7,)]:
        bn = BatchNorm(shape, D)
        ref = (torch.nn.BatchNorm2d if len(shape) == 3 else torch.nn.BatchNorm1d)(shape[0])
        ref = ref.to(D)
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        with torch.no_grad():
            ref.weight.copy_(bn.weight), ref.bias.copy_(bn.bias)
        for _ in range(3):
            s = torch.rand(5, *shape, dtype=D)
            assert torch.allclose(bn(s, train=True), ref.train()(s))
        assert torch.allclose(bn.running_var, ref.running_var)
        s = torch.rand(5, *shape, dtype=D)
        assert torch.allclose(bn(s, train=False), ref.eval()(s))


def test_architecture_items_for_feed_forward_blocks() -> None:
    stages = parse_arch("conv8k5-bn-pool|ff32-bn-fc16-fc10")
    assert [len(layers) for _, layers in stages] == [1, 1, 2]
    assert [type(op).__name__ for op in stages[1][0]] == ["Norm", "Pool"]
    assert stages[1][1][0].ff and not stages[2][1][0].ff
    assert trained_layers("conv8k5-bn-pool|ff32-bn-fc16-fc10") == 6
    conv = parse_arch("ffconv8k5s2p1|fc10")[0][1][0]
    assert (conv.kind, conv.size, conv.kernel, conv.stride, conv.padding, conv.ff) == (
        "conv",
        8,
        5,
        2,
        1,
        True,
    )
    for bad, words in [
        ("conv8-fc10-ff10", "dense output layer of an energy-based block"),
        ("fc10-bn", "must end with a weight layer"),
        ("fc16-ffconv8-fc10", "convolution after a dense"),
        ("conv8-apool-ff16-fc10", "between two weight layers"),
        ("conv8-apool-bn-fc10", "between two weight layers"),
        ("conv8-bnx-fc10", "not one of"),
    ]:
        with pytest.raises(ArchError, match=words):
            parse_arch(bad)
    net = HybridNetwork("conv4k3-bn-pool|ff16-bn|fc10", (1, 8, 8), 10)
    assert [type(b) for b in net.blocks] == [HopfieldBlock, FeedForwardLayer, HopfieldBlock]
    arrays = net.arrays
    assert [(a.rows, a.cols, a.uses, a.block, a.fed_back) for a in arrays] == [
        (9, 4, 64, 0, False), (64, 16, 1, 1, False), (16, 10, 1, 2, False)
    ]  # fmt: skip
    # the batch norm over 4×8×8 units and the 2×2 max pool; then the batch norm over 16
    assert [a.ff_ops_in for a in arrays] == [0, 2 * 256 + 64 * 4, 2 * 16]
    assert net.block_sweeps(15) == [1, 1, 1]
    assert [p.dim() for p in net.params()] == [2, 1, 2, 1, 2] + [1] * 5
    # the ff layer hands an error back to its batch norm and block 0: a transposed read
    assert [a.read_back for a in arrays] == [False, True, False]
    first = HybridNetwork("ff16|fc10", (1, 8, 8), 10).arrays  # nothing before it to train
    assert [a.read_back for a in first] == [False, False]


def test_the_ledger_counts_a_feed_forward_layers_backward_read() -> None:
    """Training reads an analog feed-forward layer forward and, for the error on its input,
    through its transpose: twice the MACs and device reads of inference, its error in through
    DACs and the error on its input out through ADCs."""
    from npusim.runtime.ledger import Ledger

    arrays = HybridNetwork("conv4k3-bn-pool|ff16-bn|fc10", (1, 8, 8), 10).arrays
    b, ff = 5, arrays[1]
    counts = {}
    for phase in ("free", "inference"):
        led = Ledger()
        led.relax(phase, arrays, b, 1, block=1)
        counts[phase] = {
            key: led.count(key, phase, 1) for key in ("macs", "device_reads", "adc", "dac")
        }
    cells = ff.rows * ff.cols
    assert counts["inference"]["macs"] == b * cells and counts["free"]["macs"] == 2 * b * cells
    assert counts["free"]["device_reads"] == 2 * b * cells
    assert counts["free"]["dac"] == b * (ff.in_units + ff.out_units)  # its input, then δ
    assert counts["free"]["adc"] == b * (ff.out_units + ff.in_units)  # its output, then the error


def test_an_architecture_file_is_the_same_network_as_its_string(tmp_path) -> None:
    text = "conv4k3-bn-pool|ff16-bn-fc12-fc10"
    tables = tmp_path / "net.toml"
    tables.write_text(
        '# three blocks\n[[block]]\nlayers = ["conv4k3", "bn", "pool"]\n'
        '[[block]]\nlayers = ["ff16", "bn"]\n[[block]]\nlayers = ["fc12", "fc10"]\n'
    )
    one = tmp_path / "one.toml"
    one.write_text('layers = ["conv4k3", "bn", "pool", "|", "ff16", "bn", "fc12", "fc10"]\n')
    for path in (tables, one):
        assert parse_arch(str(path)) == parse_arch(text)
        a = HybridNetwork(str(path), (1, 8, 8), 10, seed=4)
        b = HybridNetwork(text, (1, 8, 8), 10, seed=4)
        assert all(torch.equal(p, q) for p, q in zip(a.params(), b.params(), strict=True))
        assert a.arrays == b.arrays


def test_a_bad_architecture_file_is_one_arch_error_naming_it(tmp_path) -> None:
    from npusim.runtime.config import ConfigError, TrainConfig

    cases = {
        "missing.toml": (None, "not found"),
        "broken.toml": ('layers = ["conv4k3", \n', "not valid TOML"),
        "token.toml": ('layers = ["conv4k3", "bnn", "fc10"]\n', "'bnn' is not one of"),
        "keys.toml": ('lyrs = ["fc10"]\n', "either a layers list"),
        "items.toml": ("layers = [10]\n", "list of item strings"),
        "table.toml": ('[[block]]\nlayers = ["fc10"]\nsize = 3\n', "needs only a layers"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(ArchError, match=words) as e:
            parse_arch(str(path))
        assert str(e.value).startswith(f"architecture file {path}:")
        assert len(str(e.value).splitlines()) == 1
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig(model="hybrid", arch=str(tmp_path / "missing.toml")).resolved()


@pytest.mark.parametrize("chip", ["ideal", "rram"])
def test_a_hybrid_network_with_batch_norm_learns_synthetic_colour_images(chip: str) -> None:
    """Three epochs of chained BP-EP with batch norms and an analog feed-forward layer: test
    error below 20% against chance's 67%. On the rram chip, devices hold every crossbar (the
    feed-forward layer's too) and the batch norms' γ and β are exact digital registers."""
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.ledger import Ledger
    from npusim.runtime.train import Trainer

    arch = "conv8k3-bn-pool|ff16-bn|fc3"
    cfg = TrainConfig(
        model="hybrid", arch=arch, epochs=3, lrs=[0.1], augment=0, rotate=0.0, zoom=0.0, chip=chip
    )
    tr = Trainer(cfg, data=_synthetic(), ledger=Ledger())
    net = tr.model
    assert isinstance(net, HybridNetwork) and len(cfg.resolved().lrs) == 5
    if chip == "rram":
        devices = getattr(tr.synapses, "devices", tr.synapses)
        held = [y is not None for y in devices.y]
        assert held == [p.dim() == 2 for p in net.params()] and sum(held) == 3
        x, y = _synthetic().x_train[:16], _synthetic().y_train[:16]
        before = [p.clone() for p in net.params()]
        grads = tr.step(x, y).grads
        lrs = tr.optim.lrs
        for p, b, g, lr, on in zip(net.params(), before, grads, lrs, held, strict=True):
            exact = b - lr * dense(g)
            if not on:  # γ and β: exact registers, updated exactly
                assert torch.equal(p, exact)
            else:  # a crossbar: quantised device pulses, not the exact update
                assert not torch.equal(p, exact)
    for _ in range(3):
        rec = tr.run_epoch()
    assert rec.test_error < 0.20
    led = tr.ledger
    assert [a.block for a in led.arrays] == [0, 1, 2] and [a.uses for a in led.arrays] == [
        100,
        1,
        1,
    ]
    assert led.mean_sweeps("free") == 1.0
    assert net.norms[0].running_var.ne(1.0).all()  # the running statistics were updated


def test_a_resumed_batch_norm_run_continues_exactly() -> None:
    """Checkpoints hold the batch norms' running statistics: one epoch, a checkpoint loaded
    into a fresh trainer, then a second epoch equals two epochs in one go (weights, running
    statistics and the errors evaluated on them)."""
    from npusim.runtime.config import TrainConfig
    from npusim.runtime.train import Trainer

    cfg = TrainConfig(
        model="hybrid", arch="conv8k3-bn-pool|ff16-bn|fc3", epochs=2, lrs=[0.1], augment=0,
        rotate=0.0, zoom=0.0,
    )  # fmt: skip
    full = Trainer(cfg, data=_synthetic())
    first = full.run_epoch()
    ckpt = full.checkpoint()
    assert len(ckpt["buffers"]) == 4 and len(ckpt["best_buffers"]) == 4
    assert not torch.equal(ckpt["buffers"][0], torch.zeros_like(ckpt["buffers"][0]))
    second = full.run_epoch()
    resumed = Trainer(cfg, data=_synthetic())
    resumed.load_checkpoint(ckpt)
    again = resumed.run_epoch()
    assert resumed.state.history[0] == first and again.test_error == second.test_error
    for a, b in zip(full.model.buffers() + full.model.params(), resumed.model.buffers()
                    + resumed.model.params(), strict=True):  # fmt: skip
        assert torch.equal(a, b)
