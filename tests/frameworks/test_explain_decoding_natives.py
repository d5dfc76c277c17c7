"""What `ctcbridge explain --decoding` says of the natives (ctcbridge/explain.py,
DECODING), checked against them: default blanks, tie rules (the torchaudio and
tensorflow sessions)."""

from __future__ import annotations

import importlib.util
import inspect

import numpy as np
import pytest

from ctcbridge.explain import DECODING

if not (importlib.util.find_spec("torchaudio") or importlib.util.find_spec("tensorflow")):
    pytest.skip("neither torchaudio nor tensorflow is installed here", allow_module_level=True)

UNIFORM = np.log(np.full((3, 1, 4), 0.25, dtype=np.float32))  # (T, B, C), every frame tied


def test_torchaudio():
    pytest.importorskip("torchaudio")
    import torch
    import torchaudio.functional as F

    conv = DECODING["torchaudio.forced_align"]
    assert str(inspect.signature(F.forced_align).parameters["blank"].default) == \
        conv.default_blank
    ali, _ = F.forced_align(torch.from_numpy(UNIFORM.transpose(1, 0, 2).copy()),
                            torch.tensor([[1]], dtype=torch.int32), blank=0)
    # "stay, then s-1 ...; the last label over the final blank unless strictly better"
    assert ali[0].tolist() == [1, 1, 1]


def test_tensorflow():
    tf = pytest.importorskip("tensorflow")
    greedy = DECODING["tensorflow.ctc_greedy_decoder"]
    assert greedy.default_blank == "C-1"
    x = np.array(UNIFORM)
    x[:, :, 3] += 5.0  # class C - 1 wins every frame: the default blank, nothing decoded
    (d,), _ = tf.nn.ctc_greedy_decoder(x, np.array([3], np.int32))
    assert d.values.numpy().tolist() == []
    # ties: the smallest class index
    (d,), _ = tf.nn.ctc_greedy_decoder(UNIFORM, np.array([3], np.int32))
    assert d.values.numpy().tolist() == [0]
    for name in ("tensorflow.ctc_beam_search_decoder", "tensorflow.ctc_beam_search_decoder_v1"):
        assert DECODING[name].default_blank == "fixed C-1"
    assert "blank_index" not in inspect.signature(tf.nn.ctc_beam_search_decoder).parameters
    (d,), _ = tf.nn.ctc_beam_search_decoder(x, np.array([3], np.int32), beam_width=4)
    assert d.values.numpy().tolist() == []


def test_keras():
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    conv = DECODING["keras.ctc_decode"]
    assert str(inspect.signature(keras.ops.ctc_decode).parameters["mask_index"].default) == \
        conv.default_blank
    assert conv.layout == "NTC"
    x = np.array(UNIFORM.transpose(1, 0, 2))  # (B, T, C)
    x[:, :, 0] += 5.0  # class 0 wins: the default mask_index, nothing decoded
    decoded, _ = keras.ops.ctc_decode(x, np.array([3], np.int32))
    assert (np.asarray(decoded) == -1).all()
