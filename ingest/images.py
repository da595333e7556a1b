"""Reading photos safely: the one place tunegraph decodes an image.

Accepts JPEG, PNG and WebP; applies the EXIF orientation; converts RGBA, LA, grayscale, palette,
CMYK and 16-bit images to 8-bit RGB (transparency composited on white); refuses images above a
pixel limit before decoding them (decompression bombs) and files that are not images or are cut
off, with an :class:`ImageError` that names the file and says what to do.

A request's photos travel as :class:`Photo` records: the bytes, and the picture decoded once and
kept, so that every model and check that looks at a photo shares one decode.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("JPEG", "PNG", "WEBP")
MAX_PIXELS = 40_000_000  # about 7300 x 5500; phone photos are 12-50 MP


class ImageError(ValueError):
    """An image that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class Photo:
    """One photo of a request: its bytes (all that a graph checkpoint stores) and, decoded the
    first time :attr:`image` is read and kept outside the fields, its RGB picture.

    ``name`` is how errors refer to it. Decode it before threads share it (:func:`check_image`
    does): the first read is not locked.
    """

    data: bytes
    name: str = "image"

    @property
    def image(self) -> Any:
        """The RGB ``PIL.Image`` (:func:`load_image`'s, decoded on the first read)."""
        if "_image" not in self.__dict__:
            self.__dict__["_image"] = load_image(self.data, self.name)
        return self.__dict__["_image"]


def as_photos(images: Sequence[Photo | bytes]) -> list[Photo]:
    """``images`` as :class:`Photo` records; bytes become photos named "image 1", "image 2"...

    >>> [p.name for p in as_photos([b"...", Photo(b"...", "hood.jpg")])]
    ['image 1', 'hood.jpg']
    """
    return [
        image if isinstance(image, Photo) else Photo(image, f"image {number}")
        for number, image in enumerate(images, 1)
    ]


def pictures(images: Sequence[Photo | bytes]) -> list[Any]:
    """The RGB pictures of ``images``: a photo's kept one, bytes decoded (see :func:`as_photos`)."""
    return [photo.image for photo in as_photos(images)]


def load_image(
    source: bytes | Path | str, name: str | None = None, *, max_pixels: int = MAX_PIXELS
):
    """An RGB ``PIL.Image`` from a file path or the bytes of an upload.

    ``name`` is how errors refer to the image (default: the path, or "image").

    >>> load_image(b"not a picture", "upload.jpg")
    Traceback (most recent call last):
    ...
    ingest.images.ImageError: upload.jpg: not a JPEG, PNG or WebP image (the file is not an image or is corrupt)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = name or (str(source) if isinstance(source, Path | str) else "image")
    if isinstance(source, Path | str):
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{label}: no such file") from None
        except OSError as exc:
            raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    else:
        data = source
    if not data:
        raise ImageError(f"{label}: the file is empty")
    try:
        picture = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        # OSError/SyntaxError: a file cut off or damaged inside its header
        raise ImageError(
            f"{label}: not a JPEG, PNG or WebP image (the file is not an image or is corrupt)"
        ) from None
    except Image.DecompressionBombError:
        raise _too_big(label, None, max_pixels) from None
    if picture.format not in FORMATS:
        raise ImageError(
            f"{label}: {picture.format} images are not accepted; use JPEG, PNG or WebP"
        )
    width, height = picture.size
    if width * height > max_pixels:
        raise _too_big(label, (width, height), max_pixels)
    try:
        picture.load()
        picture = ImageOps.exif_transpose(picture)
        return _to_rgb(picture)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(
            f"{label}: the {picture.format} data is corrupt or cut off ({exc}); upload the "
            "original file again"
        ) from None


def check_image(data: bytes, name: str | None = None, *, max_pixels: int = MAX_PIXELS) -> Photo:
    """An upload as a :class:`Photo`, checked by decoding it (refused as :func:`load_image`
    refuses it); the picture is kept, so nothing decodes the upload again."""
    photo = Photo(data, name or "image")
    photo.__dict__["_image"] = load_image(data, photo.name, max_pixels=max_pixels)
    return photo


def _too_big(label: str, size: tuple[int, int] | None, max_pixels: int) -> ImageError:
    dims = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return ImageError(
        f"{label}: {dims}, above the limit of {max_pixels:,}; downscale the photo "
        "(or raise the pixel limit setting)"
    )


def _to_rgb(picture: Any):
    from PIL import Image

    if picture.mode == "RGB":
        return picture
    if picture.mode == "P" and "transparency" in picture.info:
        picture = picture.convert("RGBA")
    if picture.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = picture.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of clipping at 255
        picture = picture.point(lambda v: v / 256).convert("L")
    return picture.convert("RGB")


def image_bytes(picture: Any, fmt: str = "JPEG", quality: int = 92) -> bytes:
    """Encode a PIL image (for tests, fixtures and re-encoding uploads)."""
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()
