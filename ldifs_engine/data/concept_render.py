"""The concept world: a procedural renderer of small coloured objects on a dark noisy background.

Every object has a shape, a colour, a fill pattern, a size and a position (one of the four
quadrants). The built-in foundation model ``concept-clip-tiny`` was pre-trained on captions that
mention shape, colour, pattern and size but never position or how many objects there are, so
those are concepts it has to learn by fine-tuning.

Rendering is vectorised over a batch of images (no per-pixel Python loops): object masks are
evaluated on a 2x supersampled grid and box-filtered, which anti-aliases the silhouettes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from ..lazy import F, torch

# Bump when anything below changes the pixels a seed produces; the shipped model's manifest
# records the version it was trained and measured on.
DATA_VERSION = "concept-world/1"

IMAGE_SIZE = 48
QUADRANT_SIZE = IMAGE_SIZE // 2

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
COLOUR_VALUES = (  # RGB of each named colour, in COLOURS order
    (225, 40, 40),  # red
    (245, 140, 20),  # orange
    (235, 225, 40),  # yellow
    (40, 200, 60),  # green
    (40, 215, 225),  # cyan
    (50, 90, 235),  # blue
    (160, 60, 215),  # purple
    (235, 235, 235),  # white
)
PATTERNS = ("solid", "horizontally striped", "vertically striped", "checkered")
SIZES = ("small", "large")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")

# Object half-extent in pixels per size class; the gap between the classes keeps "size" unambiguous.
RADIUS_RANGE = {0: (6.0, 7.5), 1: (9.5, 11.0)}
BAND_PX = 2  # width of one stripe / checker band
DARK_BAND = 0.45  # brightness of the dark bands of a pattern, relative to the object colour
COLOUR_JITTER = 12.0  # per-channel std of an object's colour around its named colour
SUPERSAMPLE = 2

ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "pattern": PATTERNS, "size": SIZES, "quadrant": QUADRANTS}


@lru_cache(maxsize=1)
def colour_rgb() -> torch.Tensor:
    """``COLOUR_VALUES`` as a float ``[8, 3]`` tensor (built on first use: the constants stay torch-free)."""
    return torch.tensor(COLOUR_VALUES, dtype=torch.float32)


@dataclass(frozen=True)
class Objects:
    """Discrete attributes of up to ``K`` objects in each of ``N`` images (LongTensors ``[N, K]``).

    ``present`` (bool ``[N, K]``) says which slots hold an object; objects in one image must sit in
    different quadrants so that they never overlap.
    """

    shape: torch.Tensor
    colour: torch.Tensor
    pattern: torch.Tensor
    size: torch.Tensor
    quadrant: torch.Tensor
    present: torch.Tensor

    def __len__(self) -> int:
        return self.shape.shape[0]


@dataclass(frozen=True)
class Rendered:
    """Images (uint8 ``[N,3,H,W]``) and the continuous parameters drawn for each object."""

    images: torch.Tensor
    centres: torch.Tensor  # float [N, K, 2] as (x, y) pixel coordinates
    radii: torch.Tensor  # float [N, K] half-extent in pixels


def sample_objects(n: int, gen: torch.Generator, *, balance: str | None = None) -> Objects:
    """``n`` single-object images with uniformly random attributes.

    ``balance`` names one attribute whose classes get equal counts (up to one), shuffled.
    """
    attrs = {}
    for name, values in ATTRIBUTES.items():
        if name == balance:
            attrs[name] = balanced_labels(n, len(values), gen)
        else:
            attrs[name] = torch.randint(len(values), (n,), generator=gen)
    return Objects(**{k: v[:, None] for k, v in attrs.items()}, present=torch.ones(n, 1, dtype=torch.bool))


def sample_multi_objects(counts: torch.Tensor, gen: torch.Generator) -> Objects:
    """Images with ``counts[i]`` (1–4) objects each, in distinct random quadrants, attributes random."""
    n = len(counts)
    quadrant = torch.argsort(torch.rand(n, 4, generator=gen), dim=1)  # a random permutation per image
    present = torch.arange(4)[None, :] < counts[:, None]

    def rand(values: tuple) -> torch.Tensor:
        return torch.randint(len(values), (n, 4), generator=gen)

    return Objects(rand(SHAPES), rand(COLOURS), rand(PATTERNS), rand(SIZES), quadrant, present)


def balanced_labels(n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` labels with equal class counts (up to one), in random order."""
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]


def _shape_mask(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test for one shape in object coordinates (radius 1, y pointing down)."""
    au, av = u.abs(), v.abs()
    if shape == 0:  # circle
        return u * u + v * v <= 1.0
    if shape == 1:  # square, slightly smaller than its bounding box so its area matches a circle's
        return torch.maximum(au, av) <= 0.85
    if shape == 2:  # triangle pointing up
        return (v <= 0.8) & (au <= 1.0 * (v + 1.0) / 1.8)
    if shape == 3:  # diamond
        return au + av <= 1.0
    if shape == 4:  # plus-shaped cross
        return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
    if shape == 5:  # five-pointed star, point up
        rho = torch.sqrt(u * u + v * v)
        sector = 2 * math.pi / 5
        phi = torch.remainder(torch.atan2(u, -v), sector)
        phi = torch.minimum(phi, sector - phi)  # fold onto [0, sector/2]
        px, py = rho * torch.cos(phi), rho * torch.sin(phi)
        inner = 0.45
        bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
        # inside if on the origin's side of the edge from the tip (1, 0) to the inner vertex
        return (bx - 1.0) * py - by * (px - 1.0) >= 0.0
    raise ValueError(f"unknown shape index {shape}")


def _background(n: int, gen: torch.Generator) -> torch.Tensor:
    level = 10.0 + 30.0 * torch.rand(n, 1, 1, 1, generator=gen)
    tint = 6.0 * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    noise = 10.0 * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    return level + tint + noise


def render(objects: Objects, gen: torch.Generator) -> Rendered:
    """Draw the objects; the continuous details (exact size, offset, colour jitter, stripe phase, noise)
    are drawn from ``gen``."""
    n, k = objects.shape.shape
    img = _background(n, gen)
    radius_lo = torch.tensor([RADIUS_RANGE[0][0], RADIUS_RANGE[1][0]])
    radius_span = torch.tensor([RADIUS_RANGE[0][1] - RADIUS_RANGE[0][0], RADIUS_RANGE[1][1] - RADIUS_RANGE[1][0]])
    radii = radius_lo[objects.size] + radius_span[objects.size] * torch.rand(n, k, generator=gen)
    # keep a one-pixel margin inside the quadrant so objects never touch or cross its border
    slack = (QUADRANT_SIZE / 2 - 1.0 - radii).clamp(min=0.0)
    offset = (2 * torch.rand(n, k, 2, generator=gen) - 1) * slack[..., None]
    qx, qy = objects.quadrant % 2, objects.quadrant // 2
    centres = torch.stack([qx, qy], dim=-1).float() * QUADRANT_SIZE + QUADRANT_SIZE / 2 + offset
    colours = colour_rgb()[objects.colour] + COLOUR_JITTER * torch.randn(n, k, 3, generator=gen)
    phase = torch.randint(2 * BAND_PX, (n, k, 2), generator=gen)

    fine = (torch.arange(IMAGE_SIZE * SUPERSAMPLE, dtype=torch.float32) + 0.5) / SUPERSAMPLE
    pix = torch.arange(IMAGE_SIZE, dtype=torch.float32)
    for slot in range(k):
        for q in range(4):
            idx = torch.nonzero(objects.present[:, slot] & (objects.quadrant[:, slot] == q)).flatten()
            if len(idx):
                _draw(img, idx, slot, q, objects, centres, radii, colours, phase, fine, pix)
    images = img.round().clamp(0, 255).to(torch.uint8)
    return Rendered(images=images, centres=centres, radii=radii)


def _draw(img: torch.Tensor, idx: torch.Tensor, slot: int, q: int, objects: Objects, centres: torch.Tensor,
          radii: torch.Tensor, colours: torch.Tensor, phase: torch.Tensor, fine: torch.Tensor,
          pix: torch.Tensor) -> None:
    """Blend object ``slot`` of images ``idx`` (all in quadrant ``q``) into ``img``, in place.

    An object never leaves its quadrant (see the margin in ``render``), so its coverage is zero
    elsewhere and only that window is computed: per pixel the same arithmetic as on the whole
    image, so the same pixels, for a quarter of the work.
    """
    x0, y0 = (q % 2) * QUADRANT_SIZE, (q // 2) * QUADRANT_SIZE
    fx = fine[x0 * SUPERSAMPLE:(x0 + QUADRANT_SIZE) * SUPERSAMPLE]
    fy = fine[y0 * SUPERSAMPLE:(y0 + QUADRANT_SIZE) * SUPERSAMPLE]
    m = fx.numel()
    cx, cy, r = centres[idx, slot, 0], centres[idx, slot, 1], radii[idx, slot]
    u = (fx[None, None, :] - cx[:, None, None]) / r[:, None, None]
    v = (fy[None, :, None] - cy[:, None, None]) / r[:, None, None]
    shapes = objects.shape[idx, slot]
    mask = torch.zeros(len(idx), m, m, dtype=torch.bool)
    for s in range(len(SHAPES)):
        sel = torch.nonzero(shapes == s).flatten()
        if len(sel):
            mask[sel] = _shape_mask(s, u[sel].expand(-1, m, -1), v[sel].expand(-1, -1, m))
    alpha = F.avg_pool2d(mask.float()[:, None], SUPERSAMPLE)  # [n,1,Q,Q] coverage

    # pattern bands are laid on whole pixels (relative to a random phase), not on the supersampled grid
    px, py = pix[x0:x0 + QUADRANT_SIZE], pix[y0:y0 + QUADRANT_SIZE]
    bx = torch.div(px[None, None, :] + phase[idx, slot, 0, None, None], BAND_PX, rounding_mode="floor") % 2
    by = torch.div(py[None, :, None] + phase[idx, slot, 1, None, None], BAND_PX, rounding_mode="floor") % 2
    pattern = objects.pattern[idx, slot, None, None]
    dark = torch.where(pattern == 1, by, torch.where(pattern == 2, bx, torch.where(pattern == 3, (bx + by) % 2, 0)))
    shade = 1.0 - (1.0 - DARK_BAND) * dark.float()  # [n,Q,Q]
    fill = colours[idx, slot, :, None, None] * shade[:, None]
    img[idx, :, y0:y0 + QUADRANT_SIZE, x0:x0 + QUADRANT_SIZE] = (
        img[idx, :, y0:y0 + QUADRANT_SIZE, x0:x0 + QUADRANT_SIZE] * (1 - alpha) + fill * alpha)
