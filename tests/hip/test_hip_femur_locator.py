"""The femur localiser's output layout and decoding."""

from __future__ import annotations

import pytest
import torch

from osteonode.nets import ARCHITECTURES, build_network
from osteonode.nets.femur_locator import (
    CHANNELS_PER_SIDE,
    DISTANCE_UNIT,
    STRIDE,
    FemurLocator,
    FemurLocatorConfig,
    SideState,
    femur_locator,
)


def test_model_cards_can_name_the_femur_locator() -> None:
    assert ARCHITECTURES["femur_locator"] is femur_locator
    assert isinstance(
        build_network("femur_locator", widths=[8, 8, 8, 8, 8], head_width=8), FemurLocator
    )


def test_forward_gives_both_sides_maps_at_stride_8() -> None:
    network = femur_locator(widths=(8, 8, 8, 8, 8), head_width=8).eval()
    output = network(torch.zeros(2, 1, 96, 128))
    assert output.shape == (2, 2 * CHANNELS_PER_SIDE, 96 // STRIDE, 128 // STRIDE)
    centre, distances, states = FemurLocator.split(output)
    assert centre.shape == (2, 2, 12, 16)
    assert distances.shape == (2, 2, 4, 12, 16)
    assert states.shape == (2, 2, len(SideState))


def test_input_that_is_not_a_multiple_of_32_is_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        femur_locator()(torch.zeros(1, 1, 100, 128))


def test_bad_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="five positive"):
        FemurLocatorConfig(widths=(8, 8))


def test_decode_puts_the_box_around_the_peak_cell_from_its_distances() -> None:
    h, w = 6, 8
    output = torch.zeros(1, 2 * CHANNELS_PER_SIDE, h, w)
    # Image-left side: peak at cell (row 2, column 3), every cell predicting edges 16/24/40/32 px away.
    output[0, 0] = -50.0
    output[0, 0, 2, 3] = 50.0
    output[0, 1:5] = torch.tensor([16.0, 24.0, 40.0, 32.0])[:, None, None] / DISTANCE_UNIT
    output[0, 5 + SideState.PROSTHESIS] = 3.0  # the state logits of the left side
    located = FemurLocator.decode(output)
    centre_column, centre_row = 3 * STRIDE + STRIDE / 2 - 0.5, 2 * STRIDE + STRIDE / 2 - 0.5
    expected = torch.tensor(
        [centre_column - 16, centre_row - 24, centre_column + 40, centre_row + 32]
    )
    assert torch.allclose(located.boxes[0, 0], expected, atol=1e-3)
    assert located.centre_confidence[0, 0] > 0.99
    assert int(located.state_probabilities[0, 0].argmax()) == SideState.PROSTHESIS
