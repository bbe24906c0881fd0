"""The network's geometry and checkpoints: output sizes, the report's configuration, round trips."""
from __future__ import annotations

import pytest
import torch

from vesselcli.network.checkpoint import load_model, read_checkpoint, save_checkpoint
from vesselcli.imaging.preprocess import Preprocessing
from vesselcli.network.unet import REPORT_CONFIG, UNet, UNetConfig, count_parameters, valid_input_size, valid_output_size


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("size", [(31, 47), (64, 64), (97, 130)])
def test_valid_convolutions_give_the_input_size(depth: int, size: tuple[int, int]) -> None:
    model = UNet(UNetConfig(base_channels=2, depth=depth, norm="none", padding="valid")).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 1, *size)


@pytest.mark.parametrize("size", [(17, 23), (64, 64), (100, 91)])
def test_same_padding_gives_the_input_size(size: tuple[int, int]) -> None:
    model = UNet(UNetConfig(base_channels=4, depth=3)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size)).shape == (1, 1, *size)


def test_report_configuration_is_the_original_unet() -> None:
    # Ronneberger et al.: 572 -> 388 with valid convolutions, ~31M parameters at 64 channels.
    assert valid_output_size(572, 4) == 388
    assert valid_input_size(388, 4) == (572, 92)
    params = count_parameters(UNet(REPORT_CONFIG))
    assert 30_000_000 < params < 32_000_000
    assert REPORT_CONFIG.padding == "valid" and REPORT_CONFIG.norm == "none" and REPORT_CONFIG.depth == 4


def test_valid_output_pixels_see_the_right_input_pixels() -> None:
    """A valid U-Net is translation-equivariant: shifting the input shifts the output."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=2, depth=2, norm="none", padding="valid")).eval()
    x = torch.randn(1, 1, 80, 80)
    with torch.no_grad():
        a = model(x)[..., 20:60, 20:60]
        b = model(x[..., 4:, 4:])[..., 16:56, 16:56]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path) -> None:
    torch.manual_seed(1)
    cfg = UNetConfig(base_channels=4, depth=2)
    model = UNet(cfg)
    model.train()
    model(torch.randn(4, 1, 32, 32))  # move batch-norm statistics away from their defaults
    model.eval()
    save_checkpoint(
        tmp_path / "m.pt",
        {"model": model.state_dict(), "model_args": cfg.to_dict(), "preprocessing": Preprocessing().to_dict(), "threshold": 0.42},
    )
    loaded, data = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert data["threshold"] == 0.42
    # weights_only loading: nothing but tensors and primitives inside.
    torch.load(tmp_path / "m.pt", weights_only=True)


def test_foreign_file_is_refused_with_a_clear_message(tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a vesselseg checkpoint"):
        read_checkpoint(path)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        read_checkpoint(tmp_path / "junk.pt")
