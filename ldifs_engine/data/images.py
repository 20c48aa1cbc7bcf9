"""Decoding untrusted image files: the one place images are opened (uploads, stored uploads, local folders).

Format allowlist, pixel cap read from the header before anything is decoded, full decode, RGB out.
"""
from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from ..lazy import torch

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
# Process-wide backstop for every Image.open (Pillow's default is ~89 MP). Our per-upload pixel limit
# is checked from the header first; this only guards code paths that forget to.
Image.MAX_IMAGE_PIXELS = 64 * 1024 * 1024


class UnusableImage(Exception):
    """One file is not a usable image: ``code`` (not_image, corrupt, too_many_pixels, too_large) and ``reason``."""

    def __init__(self, code: str, reason: str):
        self.code, self.reason = code, reason
        super().__init__(reason)


def open_rgb(
    source: str | os.PathLike | IO[bytes],
    *,
    max_pixels: int,
    formats: tuple[str, ...] = ALLOWED_FORMATS,
    exif_transpose: bool = False,
) -> Image.Image:
    """Open an image with a format allowlist, check its size from the header, decode it fully, return RGB.

    Raises:
        UnusableImage: codes ``not_image`` (format not allowed / unidentified), ``too_many_pixels`` (header
            dimensions over ``max_pixels``; nothing was decoded), ``corrupt`` (the full decode failed).
    """
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; treat it as the error it is.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(source, formats=list(formats))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UnusableImage("too_many_pixels", "image dimensions exceed the decoder's safety limit") from None
        except UnidentifiedImageError:
            raise UnusableImage("not_image", f"not an image in an allowed format ({', '.join(formats)})") from None
        except (OSError, ValueError, SyntaxError, EOFError, TypeError, struct.error) as e:
            raise UnusableImage("corrupt", f"unreadable image header ({short_error(e)})") from None
        try:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise UnusableImage("corrupt", f"invalid image size {w}x{h}")
            if w * h > max_pixels:
                raise UnusableImage("too_many_pixels", f"{w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
            try:
                im.load()
                if exif_transpose:
                    try:
                        im = ImageOps.exif_transpose(im) or im
                    except Exception:  # noqa: BLE001 - a broken EXIF block only costs the rotation
                        pass
                if im.mode != "RGB":
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # palette-with-transparency notices
                        im = im.convert("RGB")
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise UnusableImage("too_many_pixels", "image dimensions exceed the decoder's safety limit") from None
            except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes is "corrupt"
                raise UnusableImage("corrupt", f"the image does not decode ({short_error(e)})") from None
            return im
        except BaseException:
            im.close()
            raise


def decode_image_file(path: str | os.PathLike, *, max_pixels: int = Image.MAX_IMAGE_PIXELS,
                      formats: tuple[str, ...] = ALLOWED_FORMATS) -> torch.Tensor:
    """Decode an image file into a uint8 ``[3,H,W]`` tensor (allowlisted formats, pixel-capped).

    Raises:
        ValueError: the file is not a usable image; the message says why.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        try:
            im = open_rgb(f, max_pixels=max_pixels, formats=formats)
        except UnusableImage as e:
            raise ValueError(f"{Path(path).name}: {e.reason}") from None
    from torchvision.transforms.functional import pil_to_tensor

    with im:
        return pil_to_tensor(im)


def short_error(e: BaseException) -> str:
    """An exception as one short line (for messages about untrusted files)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:120]
