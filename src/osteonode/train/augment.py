"""Declarative image augmentation for every trainer, carried out by albumentations.

An augmentation is written down as data, an :class:`AugmentationSpec` of :class:`Step` values (an
albumentations transform's name, its probability and its parameters), so that a model card can
record exactly what the networks saw (:meth:`AugmentationSpec.describe`) and a trainer of any
pipeline can use it: :meth:`AugmentationSpec.augmenter` returns an :class:`Augmenter`, a callable
on numpy images that draws its randomness from the trainer's ``numpy.random.Generator``, so a
seeded run, and a run resumed from a checkpoint that saved that generator, repeat exactly.

albumentations is the library whose transform names the chest paper uses (Park et al. 2025,
METHODS.md section 2); the named specs below are the papers' schemes:

- :data:`CHEST_WEAK`: horizontal flip (the paper's weak augmentation) and a mild random gamma;
  the paper's "normalise" is the pipeline's own input normalisation, applied after augmentation
  so that training and inference see the same numbers;
- :data:`CHEST_STRONG`: the weak steps and the paper's strong list (Blur, MotionBlur, MedianBlur,
  ShiftScaleRotate, GridDistortion, ElasticTransform, OpticalDistortion, RandomGamma,
  GridDropout);
- :data:`HIP_PAPER`: Jang et al. 2021 (METHODS.md section 3), each crop shown as one of original,
  blurred, sharpened, sheared or slightly rotated.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import albumentations
import numpy as np

__all__ = [
    "CHEST_STRONG",
    "CHEST_WEAK",
    "HIP_PAPER",
    "AugmentationSpec",
    "Augmenter",
    "Combine",
    "Step",
    "TransformName",
]

#: Seeds handed to albumentations are drawn below this bound (its generators take 32-bit seeds).
_SEED_BOUND = 2**32


class TransformName(enum.StrEnum):
    """The albumentations transforms a spec may name (their class names in albumentations)."""

    NO_OP = "NoOp"
    HORIZONTAL_FLIP = "HorizontalFlip"
    BLUR = "Blur"
    MOTION_BLUR = "MotionBlur"
    MEDIAN_BLUR = "MedianBlur"
    GAUSSIAN_BLUR = "GaussianBlur"
    SHARPEN = "Sharpen"
    AFFINE = "Affine"
    SHIFT_SCALE_ROTATE = "ShiftScaleRotate"
    GRID_DISTORTION = "GridDistortion"
    ELASTIC_TRANSFORM = "ElasticTransform"
    OPTICAL_DISTORTION = "OpticalDistortion"
    RANDOM_GAMMA = "RandomGamma"
    GRID_DROPOUT = "GridDropout"


class Combine(enum.StrEnum):
    """How the steps of a spec act on one image."""

    #: Every step in turn, each applied with its own probability.
    EVERY = "every"
    #: Exactly one step per image, chosen with weights proportional to the probabilities.
    ONE_OF = "one_of"


ParameterValue = bool | int | float | str | tuple[float, ...]


@dataclass(frozen=True)
class Step:
    """One albumentations transform with its probability and parameters.

    Parameters
    ----------
    name : TransformName
        The transform.
    probability : float
        Chance that it is applied to an image (with :attr:`Combine.ONE_OF`, its weight), in [0, 1].
    parameters : mapping of str to value
        Keyword arguments of the albumentations transform (numbers, text, or tuples for ranges).

    Raises
    ------
    TypeError
        A parameter value that is not a number, text or tuple of numbers.
    ValueError
        An unknown name, a probability outside [0, 1], or parameters albumentations does not
        accept (its message is kept).
    """

    name: TransformName
    probability: float = 0.5
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "name", TransformName(self.name))
        except ValueError:
            known = ", ".join(name.value for name in TransformName)
            raise ValueError(f"unknown transform {self.name!r}; known: {known}") from None
        if not (isinstance(self.probability, int | float) and 0.0 <= self.probability <= 1.0):
            raise ValueError(
                f"{self.name.value}: probability must lie in [0, 1], got {self.probability!r}"
            )
        parameters = {}
        for key, value in dict(self.parameters).items():
            if isinstance(value, list):
                value = tuple(value)
            if not isinstance(value, bool | int | float | str | tuple) or (
                isinstance(value, tuple) and not all(isinstance(v, int | float) for v in value)
            ):
                raise TypeError(
                    f"{self.name.value}: parameter {key} must be a number, text or tuple of"
                    f" numbers, got {value!r}"
                )
            parameters[key] = value
        object.__setattr__(self, "parameters", parameters)
        self.build()  # albumentations checks the parameters; fail here, not in the first epoch

    def build(self) -> albumentations.BasicTransform:
        """The albumentations transform of this step.

        Raises
        ------
        ValueError
            The parameters are not valid for the transform.
        """
        transform_class = getattr(albumentations, self.name.value)
        # albumentations warns (rather than raises) about unknown or adjusted arguments; a spec
        # whose meaning albumentations would quietly change is refused instead.
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            # ShiftScaleRotate, a name the paper uses, still works; albumentations only points
            # to Affine as its successor.
            warnings.filterwarnings("ignore", message=".*special case of Affine", category=UserWarning)
            try:
                return transform_class(**self.parameters, p=self.probability)
            except (UserWarning, ValueError, TypeError) as error:
                raise ValueError(f"{self.name.value}: {error}") from None

    def describe(self) -> str:
        """``Name(key=value, ..., p=probability)``."""
        arguments = [f"{key}={_text(value)}" for key, value in sorted(self.parameters.items())]
        return f"{self.name.value}({', '.join([*arguments, f'p={self.probability:g}'])})"


def _text(value: ParameterValue) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:g}" for v in value) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class AugmentationSpec:
    """An augmentation as data: the steps and how they combine.

    Parameters
    ----------
    steps : tuple of Step
        The transforms, in order.
    combine : Combine
        Every step in turn, or one step per image.

    Raises
    ------
    TypeError
        A step that is not a :class:`Step`.
    ValueError
        No steps, or one-of steps whose weights are all zero.
    """

    steps: tuple[Step, ...]
    combine: Combine = Combine.EVERY

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "combine", Combine(self.combine))
        if not self.steps:
            raise ValueError("an augmentation needs at least one step")
        for step in self.steps:
            if not isinstance(step, Step):
                raise TypeError(f"steps must be Step values, got {type(step).__name__}")
        if self.combine is Combine.ONE_OF and not any(s.probability > 0 for s in self.steps):
            raise ValueError("one-of steps need at least one positive weight")

    def __add__(self, other: AugmentationSpec) -> AugmentationSpec:
        """Both specs' steps in turn (both must combine :attr:`Combine.EVERY`)."""
        if Combine.ONE_OF in (self.combine, other.combine):
            raise ValueError("only specs that apply every step can be joined")
        return AugmentationSpec(self.steps + other.steps)

    def describe(self) -> str:
        """One line for a model card, e.g. ``every: HorizontalFlip(p=0.5); RandomGamma(...)``."""
        return f"{self.combine.value}: " + "; ".join(step.describe() for step in self.steps)

    def augmenter(self, value_range: tuple[float, float] = (0.0, 1.0)) -> Augmenter:
        """A callable that augments images whose values span ``value_range``."""
        return Augmenter(self, value_range)


class Augmenter:
    """Applies an :class:`AugmentationSpec` to grey images, reproducibly from a numpy generator.

    Parameters
    ----------
    spec : AugmentationSpec
        What to do.
    value_range : tuple of float
        The range of the images' values (e.g. (0, 255) for truncated films, (-1, 1) for
        z-transformed crops). Images are mapped onto [0, 1] for albumentations, whose intensity
        transforms (gamma, blur of float images) expect that range, and mapped back; values
        outside the range are clipped to it.

    Raises
    ------
    TypeError
        ``spec`` is not an :class:`AugmentationSpec`.
    ValueError
        ``value_range`` is not an increasing pair of finite numbers.
    """

    def __init__(self, spec: AugmentationSpec, value_range: tuple[float, float] = (0.0, 1.0)):
        if not isinstance(spec, AugmentationSpec):
            raise TypeError(f"spec must be an AugmentationSpec, got {type(spec).__name__}")
        low, high = (float(v) for v in value_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"value_range must be an increasing finite pair, got {value_range!r}")
        self.spec = spec
        self.value_range = (low, high)
        transforms = [step.build() for step in spec.steps]
        if spec.combine is Combine.ONE_OF:
            transforms = [albumentations.OneOf(transforms, p=1.0)]
        self._compose = albumentations.Compose(transforms, p=1.0, strict=True)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one image (H, W) or a batch (N, H, W); returns a new float32 array.

        Parameters
        ----------
        images : numpy.ndarray
            Grey images, 2-D or a 3-D batch.
        rng : numpy.random.Generator
            The trainer's generator; one draw from it seeds albumentations for the whole call.

        Raises
        ------
        TypeError
            ``rng`` is not a numpy Generator.
        ValueError
            ``images`` is not 2-D or 3-D.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        array = np.asarray(images)
        if array.ndim not in (2, 3):
            raise ValueError(f"expected an (H, W) image or (N, H, W) batch, got {array.shape}")
        low, high = self.value_range
        unit = np.clip((array.astype(np.float32) - low) / (high - low), 0.0, 1.0)
        batch = unit[None] if array.ndim == 2 else unit
        self._compose.set_random_seed(int(rng.integers(_SEED_BOUND)))
        out = np.stack([self._compose(image=np.ascontiguousarray(image))["image"] for image in batch])
        out = np.clip(out, 0.0, 1.0) * (high - low) + low
        return (out[0] if array.ndim == 2 else out).astype(np.float32)


def _spec(*steps: Step, combine: Combine = Combine.EVERY) -> AugmentationSpec:
    return AugmentationSpec(steps, combine)


#: OpenCV border modes (albumentations takes OpenCV's numbers): geometric transforms fill the
#: uncovered border by reflecting the film or repeating its edge, not with black.
_REFLECT, _REPLICATE = 4, 1

#: The chest paper's weak augmentation (horizontal flip) and a mild gamma for exposure.
CHEST_WEAK = _spec(
    Step(TransformName.HORIZONTAL_FLIP, 0.5),
    Step(TransformName.RANDOM_GAMMA, 0.5, {"gamma_limit": (80.0, 125.0)}),
)
#: The chest paper's strong augmentation after the weak one; limits are mild because a film's
#: bone density is read from its grey levels and fine trabecular texture.
CHEST_STRONG = CHEST_WEAK + _spec(
    Step(TransformName.BLUR, 0.1, {"blur_limit": (3, 5)}),
    Step(TransformName.MOTION_BLUR, 0.1, {"blur_limit": (3, 5)}),
    Step(TransformName.MEDIAN_BLUR, 0.1, {"blur_limit": (3, 5)}),
    Step(
        TransformName.SHIFT_SCALE_ROTATE,
        0.5,
        {"shift_limit": 0.05, "scale_limit": 0.1, "rotate_limit": 10.0, "border_mode": _REFLECT},
    ),
    Step(TransformName.GRID_DISTORTION, 0.2, {"distort_limit": 0.2, "border_mode": _REFLECT}),
    Step(TransformName.ELASTIC_TRANSFORM, 0.2, {"alpha": 1.0, "sigma": 50.0, "border_mode": _REFLECT}),
    Step(TransformName.OPTICAL_DISTORTION, 0.2, {"distort_limit": 0.05, "border_mode": _REFLECT}),
    Step(TransformName.GRID_DROPOUT, 0.2, {"ratio": 0.3, "fill": 0.0}),
)
#: Jang et al. 2021: each crop as one of original, blurred, sharpened, sheared, slightly rotated.
HIP_PAPER = _spec(
    Step(TransformName.NO_OP, 1.0),
    Step(TransformName.GAUSSIAN_BLUR, 1.0, {"sigma_limit": (0.5, 1.5), "blur_limit": 0}),
    Step(TransformName.SHARPEN, 1.0, {"alpha": (0.2, 0.5), "lightness": (1.0, 1.0)}),
    Step(TransformName.AFFINE, 1.0, {"shear": (-10.0, 10.0), "border_mode": _REPLICATE}),
    Step(TransformName.AFFINE, 1.0, {"rotate": (-10.0, 10.0), "border_mode": _REPLICATE}),
    combine=Combine.ONE_OF,
)

