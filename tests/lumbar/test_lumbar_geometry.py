"""Preprocessing and geometry shared by the lumbar pipeline and its trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osteonode.nets.vertebrae import CROP_SIZE
from osteonode.pipelines.lumbar import (
    CROP_MM_PER_PIXEL,
    DETECTOR_SIZE,
    WORKING_LONG_SIDE,
    crop_theta,
    crop_to_working,
    decode_bodies,
    decode_heatmaps,
    detector_input,
    endplate_angle,
    metal_fraction,
    prepare_film,
    sample_crops,
    working_to_crop,
)


def _body(cx: float, cy: float, width: float, height: float, angle_deg: float = 0.0) -> np.ndarray:
    box = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (width / 2, height / 2)
    t = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return box @ rotation.T + (cx, cy)


def test_working_copy_keeps_the_physical_scale_and_maps_points_back_to_source() -> None:
    pixels = np.random.default_rng(0).random((2500, 2000), dtype=np.float32)
    film = prepare_film(pixels, (0.17, 0.17))
    assert film.working.shape == (WORKING_LONG_SIDE, 410)
    assert film.spacing_mm == pytest.approx(0.17 * 2500 / 512, rel=0.01)
    points = np.array([[10.0, 20.0], [1999.0, 2499.0]])
    np.testing.assert_allclose(film.to_source(film.to_working(points)), points)


def test_small_films_are_not_enlarged_and_spacing_may_be_unknown() -> None:
    film = prepare_film(np.zeros((300, 200), np.float32) + np.arange(200), None)
    assert film.working.shape == (300, 200) and film.spacing_mm is None


def test_detector_input_is_letterboxed_into_the_top_left() -> None:
    image, scale = detector_input(np.ones((512, 410), np.float32))
    assert image.shape == (DETECTOR_SIZE, DETECTOR_SIZE)
    assert scale == pytest.approx(DETECTOR_SIZE / 512)
    assert image[:, : round(410 * scale) - 1].min() > 0.9 and image[:, -1].max() == 0.0


def test_heatmap_peak_is_found_to_a_fraction_of_a_cell() -> None:
    true = np.array([[20.3, 11.7], [5.6, 30.2]])  # (x, y) in heat-map cells
    rows, columns = np.mgrid[0:48, 0:48]
    maps = np.stack([np.exp(-0.5 * ((columns - x) ** 2 + (rows - y) ** 2)) for x, y in true])
    logits = torch.logit(torch.from_numpy(maps * 0.98 + 0.001).float())
    points, confidence = decode_heatmaps(logits, stride=2)
    np.testing.assert_allclose(points, (true + 0.5) * 2 - 0.5, atol=0.25)
    assert (confidence > 0.8).all()


def _detector_maps(bodies: list[np.ndarray], cells: int = 64) -> torch.Tensor:
    """Detector logits with Gaussian peaks at the bodies' centres and corners (cells)."""
    rows, columns = np.mgrid[0:cells, 0:cells]

    def blobs(points: np.ndarray) -> np.ndarray:
        return np.max(
            [np.exp(-0.5 * ((columns - x) ** 2 + (rows - y) ** 2)) for x, y in points], axis=0
        )

    maps = [blobs(np.array([b.mean(0) for b in bodies]))]
    maps += [blobs(np.array([b[corner] for b in bodies])) for corner in range(4)]
    return torch.logit(torch.from_numpy(np.stack(maps) * 0.98 + 0.001).float())


def test_levels_are_counted_up_from_the_lowest_body() -> None:
    # Seven bodies 6 cells apart: the top one plays T11 and must not be taken for T12.
    bodies = [_body(30.0, 8.0 + 6.0 * k, 7.0, 4.2) for k in range(7)]
    corners, confidence, found = decode_bodies(_detector_maps(bodies), stride=2, min_confidence=0.3)
    assert found.all() and (confidence > 0.8).all()
    expected = (np.stack(bodies[1:]) + 0.5) * 2 - 0.5
    np.testing.assert_allclose(corners, expected, atol=0.3)


def test_a_film_cut_off_at_the_top_misses_t12() -> None:
    bodies = [_body(30.0, 20.0 + 6.0 * k, 7.0, 4.2) for k in range(5)]
    _, confidence, found = decode_bodies(_detector_maps(bodies), stride=2, min_confidence=0.3)
    assert found.tolist() == [False, True, True, True, True, True]
    assert (confidence[0] == 0).all()


def test_aligned_crop_round_trip_and_fixed_physical_scale() -> None:
    corners = np.stack([_body(200, 150, 60, 35, 12.0), _body(220, 260, 64, 36, -5.0)])
    theta = crop_theta(corners, 0.8, (512, 410))
    local = working_to_crop(corners, theta, (512, 410))
    np.testing.assert_allclose(crop_to_working(local, theta, (512, 410)), corners, atol=1e-9)
    # Endplates horizontal in the crop; width in crop units = width_mm / half-crop mm.
    np.testing.assert_allclose(local[:, 0, 1], local[:, 1, 1], atol=1e-9)
    half_mm = CROP_SIZE / 2 * CROP_MM_PER_PIXEL
    assert local[0, 1, 0] - local[0, 0, 0] == pytest.approx(60 * 0.8 / half_mm)


def test_crop_samples_the_body_it_is_aligned_to() -> None:
    working = np.zeros((300, 300), np.float32)
    working[100:140, 80:160] = 1.0  # a bright 80 x 40 body centred at (119.5, 119.5)
    corners = np.array([[[80, 100], [159, 100], [159, 139], [80, 139]]], float)
    crop = sample_crops(
        torch.from_numpy(working)[None, None], crop_theta(corners, 1.0, working.shape)
    )
    assert crop[0, 0, CROP_SIZE // 2, CROP_SIZE // 2] == pytest.approx(1.0)
    assert crop[0, 0, 2, 2] == pytest.approx(0.0)


def test_endplate_angle_follows_the_body_tilt() -> None:
    assert endplate_angle(_body(0, 0, 40, 25, 10.0)) == pytest.approx(10.0)


def test_metal_over_a_vertebra_is_measured_and_clean_bone_is_not() -> None:
    working = np.full((400, 300), 0.3, np.float32)
    corners = {}
    for k, name in enumerate(("T12", "L1", "L2", "L3", "L4", "L5")):
        body = _body(150, 40 + 60 * k, 50, 35)
        corners[name] = body
        working[int(body[0, 1]) : int(body[2, 1]), int(body[0, 0]) : int(body[1, 0])] = 0.6
    working[250:290, 130:140] = 1.0  # a screw over L3 (centre y 220) and L4 (280)
    working[250:290, 160:170] = 1.0
    assert metal_fraction(working, corners, "L4") > 0.12
    assert metal_fraction(working, corners, "L1") == 0.0
