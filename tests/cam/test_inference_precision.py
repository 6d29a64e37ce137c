"""``--precision`` of inference (``evaluate``, ``predict``, ``cam``): fp32 by default whatever the training's;
bf16 autocast on request, with fp32 probabilities and maps close to the fp32 ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nni_covid3d.cli import main
from nni_covid3d.data.synthetic import save_axial_nifti
from nni_covid3d.explain import CamExplainer
from nni_covid3d.predict import Predictor
from nni_covid3d.training.pipeline import predict
from tests.cam.conftest import blob_volume, save_tiny_checkpoint
from tests.training.helpers import BlobVolumes, tiny_arch


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint of the real format whose outputs differ by class (the head of a fresh model is zero)."""
    path = save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, value in checkpoint["state_dict"].items():
        if value.is_floating_point() and "running" not in name:
            value.add_(0.3 * torch.randn(value.shape, generator=generator))
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    rng = np.random.default_rng(0)
    volume = rng.normal(-700, 150, size=(10, 36, 40)).astype(np.int16)
    volume[6:8, 10:16, 20:26] = 20
    path = tmp_path_factory.mktemp("scan") / "scan.nii.gz"
    save_axial_nifti(path, volume, (5.0, 0.8, 0.8))
    return path


def test_bf16_prediction_is_close_to_fp32_and_computed_under_autocast(ckpt, scan):
    fp32 = Predictor(ckpt).predict(scan).probabilities
    bf16 = Predictor(ckpt, precision="bf16-mixed").predict(scan).probabilities
    np.testing.assert_allclose(bf16, fp32, atol=0.02)
    assert bf16 != fp32  # bfloat16 rounding shows: autocast ran
    assert sum(bf16) == pytest.approx(1.0, abs=1e-6)  # the softmax in fp32


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_bf16_maps_are_fp32_and_peak_where_the_fp32_maps_peak(blob_net, method):
    image = blob_volume((2, 11, 4))
    maps = {precision: CamExplainer(blob_net, (1, 8, 16, 16), method=method, target_layer="features"
                                    if method != "occlusion" else None, precision=precision)(image)
            for precision in ("32-true", "bf16-mixed")}
    fp32, bf16 = maps["32-true"], maps["bf16-mixed"]
    assert bf16.heatmap.dtype == np.float32 and bf16.probabilities.dtype == np.float32
    assert bf16.class_idx == fp32.class_idx == 1
    assert np.unravel_index(bf16.heatmap.argmax(), bf16.heatmap.shape) == \
        np.unravel_index(fp32.heatmap.argmax(), fp32.heatmap.shape)
    assert np.corrcoef(bf16.heatmap.ravel(), fp32.heatmap.ravel())[0, 1] > 0.95


def test_evaluation_under_bf16_gives_fp32_probabilities_close_to_fp32():
    from nni_covid3d.search_spaces import build_model

    torch.manual_seed(0)
    model = build_model(tiny_arch())
    data = BlobVolumes(6)
    labels, fp32 = predict(model, data, batch_size=3, progress=False)
    labels_bf16, bf16 = predict(model, data, batch_size=3, progress=False, precision="bf16-mixed")
    assert (labels == labels_bf16).all() and bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.02)
    assert not np.array_equal(bf16, fp32)


def test_the_commands_take_the_option_and_refuse_what_the_cpu_cannot_run(ckpt, scan, capsys):
    assert main(["predict", "--ckpt", str(ckpt), str(scan), "--json", "--precision", "bf16-mixed"]) == 0
    assert sum(json.loads(capsys.readouterr().out)["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SystemExit):
        main(["predict", "--ckpt", str(ckpt), str(scan), "--precision", "16-mixed"])
    assert "--precision: invalid choice: '16-mixed'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["evaluate", "--ckpt", str(ckpt), "--precision", "16-mixed"]) != 0
        assert "--precision 16-mixed" in capsys.readouterr().err
