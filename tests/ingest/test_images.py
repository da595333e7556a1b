from __future__ import annotations

import io

import pytest
from PIL import Image

from ingest.images import (
    ImageError,
    Photo,
    as_photos,
    check_image,
    image_bytes,
    load_image,
    pictures,
)


def _encoded(picture: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_load_as_rgb(fmt):
    picture = load_image(_encoded(Image.new("RGB", (30, 20), (200, 10, 10)), fmt), "car")
    assert picture.mode == "RGB" and picture.size == (30, 20)
    red, green, _ = picture.getpixel((15, 10))
    assert red > 180 and green < 40


def test_exif_orientation_is_applied():
    picture = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    loaded = load_image(_encoded(picture, "JPEG", exif=exif.tobytes()), "phone.jpg")
    assert loaded.size == (20, 40)


def test_transparency_grayscale_palette_and_16_bit_become_rgb():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(_encoded(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(_encoded(Image.new("L", (4, 4), 80), "PNG")).getpixel((1, 1)) == (80, 80, 80)
    palette = Image.new("RGB", (4, 4), (0, 0, 255)).convert("P")
    assert load_image(_encoded(palette, "PNG")).getpixel((0, 0)) == (0, 0, 255)
    deep = Image.new("I;16", (4, 4), 65535)
    assert load_image(_encoded(deep, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_pixel_limit_refuses_before_decoding():
    data = _encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError, match=r"big\.png: 100x100 = 10,000 pixels, above the limit"):
        load_image(data, "big.png", max_pixels=5000)


def test_corrupt_truncated_missing_and_other_formats_name_the_file(tmp_path):
    jpeg = image_bytes(Image.effect_noise((200, 200), 60).convert("RGB"))
    with pytest.raises(ImageError, match=r"cut\.jpg: the JPEG data is corrupt or cut off"):
        load_image(jpeg[: len(jpeg) // 2], "cut.jpg")
    for cut in (jpeg[:20], jpeg[:100]):  # cut off inside the header
        with pytest.raises(ImageError, match=r"head\.jpg: not a JPEG, PNG or WebP image"):
            load_image(cut, "head.jpg")
    with pytest.raises(ImageError, match=r"notes\.txt: not a JPEG, PNG or WebP image"):
        load_image(b"hello", "notes.txt")
    with pytest.raises(ImageError, match=r"anim\.gif: GIF images are not accepted"):
        load_image(_encoded(Image.new("RGB", (4, 4)), "GIF"), "anim.gif")
    with pytest.raises(ImageError, match="empty"):
        load_image(b"", "zero.jpg")
    with pytest.raises(ImageError, match=r"missing\.png: no such file"):
        load_image(tmp_path / "missing.png", "missing.png")
    path = tmp_path / "ok.png"
    path.write_bytes(_encoded(Image.new("RGB", (3, 3)), "PNG"))
    assert load_image(path).size == (3, 3)


def test_check_image_refuses_what_load_image_refuses():
    import random

    rng = random.Random(3)
    photo = Image.effect_noise((320, 240), 60).convert("RGB")
    good = {fmt: image_bytes(photo, fmt) for fmt in ("JPEG", "PNG", "WEBP")}
    variants = {f"{fmt} whole": data for fmt, data in good.items()}
    for fmt, data in good.items():
        for cut in (0.3, 0.7, 0.95):
            variants[f"{fmt} cut at {cut}"] = data[: int(len(data) * cut)]
    jpeg = bytearray(good["JPEG"])
    for n in range(5):  # damaged bytes inside the compressed data
        damaged = bytearray(jpeg)
        for _ in range(20):
            damaged[rng.randrange(len(jpeg) // 3, len(jpeg) - 2)] = rng.randrange(256)
        variants[f"JPEG damaged {n}"] = bytes(damaged)
    variants["not an image"] = b"GIF89a" + bytes(100)
    outcomes = {}
    for label, data in variants.items():
        try:
            load_image(data, label)
            loaded = None
        except ImageError as exc:
            loaded = str(exc).split(":")[0]
        try:
            check_image(data, label)
            checked = None
        except ImageError as exc:
            checked = str(exc).split(":")[0]
        outcomes[label] = (loaded, checked)
    assert all(loaded == checked for loaded, checked in outcomes.values()), outcomes
    assert outcomes["JPEG cut at 0.7"][0] == "JPEG cut at 0.7"  # refused, naming the upload
    assert outcomes["JPEG whole"] == (None, None)
    with pytest.raises(ImageError, match="above the limit"):
        check_image(good["JPEG"], "big.jpg", max_pixels=1000)


def test_a_photo_is_decoded_once_and_checkpoints_as_its_bytes(monkeypatch):
    import dataclasses

    import ingest.images

    data = image_bytes(Image.new("RGB", (8, 6), (10, 200, 10)), "PNG")
    calls = []
    real = ingest.images.load_image
    monkeypatch.setattr(
        ingest.images, "load_image", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    photo = Photo(data, "side.png")
    assert calls == []  # decoded on first use, not before
    assert photo.image is photo.image and photo.image.size == (8, 6)
    assert calls == [(data, "side.png")]
    # a checkpoint stores the fields: the bytes and the name, not the picture
    assert {f.name: getattr(photo, f.name) for f in dataclasses.fields(photo)} == {
        "data": data, "name": "side.png"
    }  # fmt: skip
    assert photo == Photo(data, "side.png")
    checked = check_image(data, "up.png")  # decodes now, once
    assert checked.image is checked.image and len(calls) == 2
    photos = as_photos([data, checked])
    assert [p.name for p in photos] == ["image 1", "up.png"] and photos[1] is checked
    assert [p.getpixel((0, 0)) for p in pictures(photos)] == [(10, 200, 10)] * 2
    assert len(calls) == 3  # only the new "image 1"
