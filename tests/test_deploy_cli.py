"""``npusim deploy``: deploy.json and the plot from a tiny run; bad input is one error line."""

from __future__ import annotations

import json

import pytest
import torch

from npusim.cli.main import main
from npusim.core.errors import NpusimError


def test_deploy_command_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["deploy", "mlp", "--dataset", "digits", "--chip", "pcm", "--epochs", "3"]
    argv += ["--after", "1h", "1d", "1y", "--repeats", "2", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "deploy.json").read_text())
    assert 0.0 <= res["digital_test_error"] <= 1.0
    assert set(res["after"]) == {"1h", "1d", "1y"}
    for r in res["after"].values():
        assert 0.0 <= r["mean"] <= 1.0 and r["std"] >= 0.0 and len(r["runs"]) == 2
    assert res["fit"]["arrays"] == 2 * (1 * 2 + 2 * 1 + 1 * 1)  # 64-256-128-10 on 128x128
    assert 0 < res["fit"]["utilisation"] <= 1 and res["fit"]["area_m2"] > 0
    e = res["energy"]
    assert e["total_energy_j"] > 0 and set(e["baselines"]) >= {"H100 SXM", "A100 SXM"}
    assert (out / "deploy.png").stat().st_size > 0
    assert "after     1y" in capsys.readouterr().out
    # npusim report prints the folder's inference bill: its total and each baseline's
    assert main(["report", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"{1e9 * e['total_energy_j']:.1f}" in shown
    h100 = e["baselines"]["H100 SXM"]["total_j"]
    assert f"H100 SXM: {1e9 * h100:.1f} nJ per inference" in shown
    (out / "deploy.json").write_text("[1, 2]")
    assert main(["report", str(out)]) == 2
    assert "not a deploy.json" in capsys.readouterr().err


def test_bad_model_files_are_one_error_line(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    assert main(["deploy", str(junk), "--dataset", "digits", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a TorchScript or torch.save'd module" in err[0]
    torch.save({"w": torch.zeros(2)}, tmp_path / "dict.pt")
    assert main(["deploy", str(tmp_path / "dict.pt"), "--dataset", "digits"]) == 2
    assert "holds a dict, not an nn.Module" in capsys.readouterr().err


def test_unsupported_layer_and_too_large_model_are_one_error_line(tmp_path, capsys):
    src = tmp_path / "nets.py"
    src.write_text(
        "import torch\n"
        "class R(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.rnn = torch.nn.GRU(64, 10)\n"
        "    def forward(self, x):\n"
        "        return self.rnn(x)[0]\n"
        "def rnn():\n"
        "    return R()\n"
        "def big():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(64, 40000), torch.nn.Linear(40000, 10))\n"
    )
    common = ["--dataset", "digits", "--repeats", "1", "--out", str(tmp_path / "o")]
    assert main(["deploy", f"{src}:rnn", *common]) == 2
    assert "layer 'rnn' (GRU)" in capsys.readouterr().err
    assert main(["deploy", f"{src}:big", *common]) == 2
    err = capsys.readouterr().err
    assert "needs 1252 arrays" in err and "has 1024" in err


def test_torchscript_and_factory_models_load(tmp_path):
    from npusim.deploy.models import load_model, mlp

    torch.manual_seed(0)
    model = mlp(64, (16,), 10).eval()
    with pytest.warns(DeprecationWarning):  # torch 2.13 deprecates TorchScript
        torch.jit.script(model).save(str(tmp_path / "m.ts"))
    torch.save(model, tmp_path / "m.pt")
    x = torch.rand(3, 64)
    with pytest.raises(NpusimError, match="--trust-model-file"):
        load_model(str(tmp_path / "m.pt"))  # a pickle is not unpickled unless trusted
    for path in ("m.ts", "m.pt"):
        loaded, built_in = load_model(str(tmp_path / path), trust_pickle=True)
        assert not built_in
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
