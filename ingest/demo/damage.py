"""Synthetic car-damage photos with COCO annotations.

Each image is a schematic car seen from the front, the side or the rear, drawn with PIL on a
noisy background, with one to three damages of CarDD's six classes painted on named parts at
three severities. Every damage becomes a COCO annotation (bbox, segmentation polygon, category,
plus its part and severity); every image records its view, overall severity, main part and a
repair cost from :mod:`ingest.demo.costs` for a hidden region and vehicle value of its own.

Over 400 lines on purpose: the drawing of each damage class and its annotation are kept side
by side, so a box always matches what was painted.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from ingest.demo.costs import draw_factors, quote_noise, repair_cost
from ingest.taxonomy import DAMAGE_TYPES, PART_DAMAGES, SEVERITIES, VIEW_PARTS

WIDTH, HEIGHT = 320, 240
SEVERITY_SCALE = {"minor": 0.35, "moderate": 0.6, "severe": 0.9}
CAR_COLOURS = (
    (180, 20, 30),
    (30, 60, 150),
    (220, 220, 225),
    (40, 40, 45),
    (150, 150, 155),
    (20, 110, 60),
    (230, 170, 30),
    (110, 70, 40),
    (90, 20, 90),
    (60, 130, 180),
)

# Part outlines in unit coordinates (x, y in 0..1). Ellipses are ("ellipse", cx, cy, rx, ry).
Shape = tuple


def _rect(x0: float, y0: float, x1: float, y1: float) -> Shape:
    return ("poly", ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))


LAYOUTS: dict[str, dict[str, list[Shape]]] = {
    "side": {
        "body": [
            (
                "poly",
                (
                    (0.08, 0.47),
                    (0.3, 0.44),
                    (0.38, 0.27),
                    (0.66, 0.27),
                    (0.77, 0.44),
                    (0.92, 0.48),
                    (0.92, 0.71),
                    (0.08, 0.71),
                ),
            )
        ],
        "front_fender": [_rect(0.09, 0.48, 0.29, 0.68)],
        "front_door": [_rect(0.30, 0.46, 0.52, 0.69)],
        "rear_door": [_rect(0.52, 0.46, 0.72, 0.69)],
        "rear_quarter_panel": [_rect(0.73, 0.48, 0.91, 0.68)],
        "side_window": [("poly", ((0.33, 0.44), (0.39, 0.30), (0.64, 0.30), (0.73, 0.44)))],
        "side_mirror": [("poly", ((0.27, 0.40), (0.31, 0.40), (0.31, 0.45), (0.27, 0.45)))],
        "front_tire": [("ellipse", 0.21, 0.72, 0.085, 0.11)],
        "rear_tire": [("ellipse", 0.79, 0.72, 0.085, 0.11)],
    },
    "front": {
        "body": [
            (
                "poly",
                (
                    (0.15, 0.42),
                    (0.27, 0.40),
                    (0.33, 0.17),
                    (0.67, 0.17),
                    (0.73, 0.40),
                    (0.85, 0.42),
                    (0.85, 0.76),
                    (0.15, 0.76),
                ),
            )
        ],
        "windshield": [("poly", ((0.28, 0.39), (0.34, 0.20), (0.66, 0.20), (0.72, 0.39)))],
        "hood": [_rect(0.17, 0.42, 0.83, 0.52)],
        "headlamp": [("ellipse", 0.26, 0.57, 0.08, 0.035), ("ellipse", 0.74, 0.57, 0.08, 0.035)],
        "front_bumper": [_rect(0.16, 0.63, 0.84, 0.75)],
        "front_tire": [_rect(0.18, 0.76, 0.27, 0.88), _rect(0.73, 0.76, 0.82, 0.88)],
    },
    "rear": {
        "body": [
            (
                "poly",
                (
                    (0.15, 0.42),
                    (0.28, 0.40),
                    (0.34, 0.19),
                    (0.66, 0.19),
                    (0.72, 0.40),
                    (0.85, 0.42),
                    (0.85, 0.76),
                    (0.15, 0.76),
                ),
            )
        ],
        "rear_window": [("poly", ((0.30, 0.38), (0.35, 0.22), (0.65, 0.22), (0.70, 0.38)))],
        "trunk_lid": [_rect(0.27, 0.42, 0.73, 0.58)],
        "tail_lamp": [("ellipse", 0.21, 0.52, 0.05, 0.045), ("ellipse", 0.79, 0.52, 0.05, 0.045)],
        "rear_bumper": [_rect(0.16, 0.63, 0.84, 0.75)],
        "rear_tire": [_rect(0.18, 0.76, 0.27, 0.88), _rect(0.73, 0.76, 0.82, 0.88)],
    },
}
GLASS = {"windshield", "rear_window", "side_window"}


@dataclass
class Damage:
    type: str
    part: str
    severity: str
    bbox: list[float]  # x, y, w, h in pixels
    polygon: list[float]  # x0, y0, x1, y1, ... in pixels


class _Canvas:
    """Maps unit coordinates to pixels with a per-image scale and offset (camera framing)."""

    def __init__(self, rng: random.Random) -> None:
        self.scale = rng.uniform(0.85, 1.05)
        self.dx = rng.uniform(-0.05, 0.05) + (1 - self.scale) / 2
        self.dy = rng.uniform(-0.04, 0.04) + (1 - self.scale) / 2

    def px(self, x: float, y: float) -> tuple[float, float]:
        return ((self.dx + x * self.scale) * WIDTH, (self.dy + y * self.scale) * HEIGHT)

    def box(self, shape: Shape) -> tuple[float, float, float, float]:
        if shape[0] == "ellipse":
            _, cx, cy, rx, ry = shape
            x0, y0 = self.px(cx - rx, cy - ry)
            x1, y1 = self.px(cx + rx, cy + ry)
        else:
            xs, ys = zip(*(self.px(*p) for p in shape[1]), strict=False)
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        return x0, y0, x1, y1


def generate_image(rng: random.Random, primary: str) -> tuple[Any, str, list[Damage]]:
    """Draw one photo whose first damage is of type ``primary``; return (image, view, damages)."""
    views = [v for v, parts in VIEW_PARTS.items() if any(primary in PART_DAMAGES[p] for p in parts)]
    view = rng.choice(views)
    canvas = _Canvas(rng)
    image = Image.new("RGB", (WIDTH, HEIGHT))
    draw = ImageDraw.Draw(image)
    _background(draw, rng)
    colour = rng.choice(CAR_COLOURS)
    _draw_car(draw, canvas, view, colour)

    first_part = rng.choice([p for p in VIEW_PARTS[view] if primary in PART_DAMAGES[p]])
    wanted = [(primary, first_part)]
    others = [p for p in VIEW_PARTS[view] if p != first_part]
    for part in rng.sample(others, k=min(len(others), rng.choice((0, 0, 1, 2)))):
        wanted.append((rng.choice(PART_DAMAGES[part]), part))
    damages = []
    for kind, part in wanted:
        severity = rng.choice(SEVERITIES)
        shape = rng.choice(LAYOUTS[view][part])
        damages.append(_PAINTERS[kind](image, canvas, rng, shape, severity, colour, kind, part))

    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7)))
    return _lighting(image, rng), view, damages


def _background(draw, rng: random.Random) -> None:
    sky = tuple(rng.randint(150, 220) for _ in range(3))
    ground = tuple(rng.randint(70, 120) for _ in range(3))
    horizon = int(HEIGHT * rng.uniform(0.45, 0.6))
    draw.rectangle((0, 0, WIDTH, horizon), fill=sky)
    draw.rectangle((0, horizon, WIDTH, HEIGHT), fill=ground)
    for _ in range(12):  # clutter so the background is not a constant
        x, y = rng.randint(0, WIDTH), rng.randint(0, HEIGHT)
        shade = tuple(max(0, c - rng.randint(10, 40)) for c in (sky if y < horizon else ground))
        draw.rectangle((x, y, x + rng.randint(5, 40), y + rng.randint(3, 20)), fill=shade)


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(c * factor))) for c in colour)


def _paint(draw, canvas: _Canvas, shape: Shape, fill, outline=None) -> None:
    if shape[0] == "ellipse":
        draw.ellipse(canvas.box(shape), fill=fill, outline=outline)
    else:
        draw.polygon([canvas.px(*p) for p in shape[1]], fill=fill, outline=outline)


def _draw_car(draw, canvas: _Canvas, view: str, colour: tuple[int, int, int]) -> None:
    layout = LAYOUTS[view]
    for shape in layout["body"]:
        _paint(draw, canvas, shape, colour, outline=_shade(colour, 0.5))
    for part, shapes in layout.items():
        if part == "body":
            continue
        for shape in shapes:
            if part in GLASS:
                fill = (120, 150, 175)
            elif part.endswith("tire"):
                fill = (25, 25, 28)
            elif part == "headlamp":
                fill = (235, 235, 210)
            elif part == "tail_lamp":
                fill = (200, 30, 30)
            else:
                fill = _shade(colour, 1.05)
            _paint(draw, canvas, shape, fill, outline=_shade(colour, 0.55))


def _region(canvas: _Canvas, rng: random.Random, shape: Shape, severity: str):
    """A box inside the part whose size grows with severity."""
    x0, y0, x1, y1 = canvas.box(shape)
    scale = SEVERITY_SCALE[severity] * rng.uniform(0.85, 1.0)
    w, h = (x1 - x0) * scale, (y1 - y0) * scale
    left = rng.uniform(x0, x1 - w)
    top = rng.uniform(y0, y1 - h)
    return left, top, left + w, top + h


def _ellipse_polygon(x0: float, y0: float, x1: float, y1: float, n: int = 12) -> list[float]:
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    points = []
    for i in range(n):
        a = 2 * math.pi * i / n
        points += [round(cx + rx * math.cos(a), 1), round(cy + ry * math.sin(a), 1)]
    return points


def _damage(kind, part, severity, x0, y0, x1, y1, polygon=None) -> Damage:
    x0, y0 = max(0.0, x0), max(0.0, y0)
    x1, y1 = min(float(WIDTH), x1), min(float(HEIGHT), y1)
    bbox = [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)]
    if polygon is None:
        polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
    polygon = [
        round(min(max(v, 0.0), WIDTH if i % 2 == 0 else HEIGHT), 1) for i, v in enumerate(polygon)
    ]
    return Damage(kind, part, severity, bbox, polygon)


def _paint_dent(image, canvas, rng, shape, severity, colour, kind, part) -> Damage:
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = _region(canvas, rng, shape, severity)
    depth = {"minor": 0.25, "moderate": 0.45, "severe": 0.65}[severity]
    # Dark paint shows a dent as a lighter reflection, light paint as a shadow.
    sign = 1.0 if sum(colour) < 300 else -1.0
    steps = 6
    for i in range(steps):  # concentric rings, strongest at the centre: a crease in the panel
        t = i / steps
        inset_x, inset_y = (x1 - x0) * t / 2, (y1 - y0) * t / 2
        base = colour if sum(colour) >= 120 else (70, 70, 75)
        draw.ellipse(
            (x0 + inset_x, y0 + inset_y, x1 - inset_x, y1 - inset_y),
            fill=_shade(base, 1.0 + sign * depth * (t + 0.2)),
        )
    highlight = (min(255, colour[0] + 60), min(255, colour[1] + 60), min(255, colour[2] + 60))
    draw.arc((x0, y0, x1, y1), 200, 340, fill=highlight, width=2)
    return _damage(kind, part, severity, x0, y0, x1, y1, _ellipse_polygon(x0, y0, x1, y1))


def _paint_scratch(image, canvas, rng, shape, severity, colour, kind, part) -> Damage:
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = _region(canvas, rng, shape, severity)
    n = {"minor": 2, "moderate": 4, "severe": 7}[severity]
    line_colour = (235, 235, 235) if sum(colour) < 600 else (70, 70, 70)
    slope = rng.uniform(-0.4, 0.4)
    for _ in range(n):
        y = rng.uniform(y0, y1)
        dy = slope * (x1 - x0)
        draw.line((x0, y, x1, min(max(y + dy, y0), y1)), fill=line_colour, width=1)
    return _damage(kind, part, severity, x0, y0, x1, y1)


def _jagged(draw, rng, start, length, angle, colour, width) -> list[tuple[float, float]]:
    points = [start]
    x, y = start
    for _ in range(6):
        angle += rng.uniform(-0.7, 0.7)
        x += math.cos(angle) * length / 6
        y += math.sin(angle) * length / 6
        points.append((x, y))
    draw.line(points, fill=colour, width=width)
    return points


def _paint_crack(image, canvas, rng, shape, severity, colour, kind, part) -> Damage:
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = _region(canvas, rng, shape, severity)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    length = max(x1 - x0, y1 - y0) / 2
    branches = {"minor": 2, "moderate": 3, "severe": 5}[severity]
    points = []
    for i in range(branches):
        angle = 2 * math.pi * i / branches + rng.uniform(-0.3, 0.3)
        width = 1 if severity == "minor" else 2
        points += _jagged(draw, rng, centre, length, angle, (15, 15, 15), width)
    return _bounded(kind, part, severity, points)


def _paint_shatter(image, canvas, rng, shape, severity, colour, kind, part) -> Damage:
    x0, y0, x1, y1 = _region(canvas, rng, shape, severity)
    centre = (rng.uniform(x0, x1), rng.uniform(y0, y1))
    # Draw the crazing on its own layer, then keep only what falls inside the damaged area.
    layer = Image.new("RGB", (WIDTH, HEIGHT), (200, 210, 220))  # crazed glass turns milky
    pen = ImageDraw.Draw(layer)
    spokes = {"minor": 8, "moderate": 12, "severe": 18}[severity]
    reach = max(x1 - x0, y1 - y0)
    for i in range(spokes):
        angle = 2 * math.pi * i / spokes + rng.uniform(-0.15, 0.15)
        end = (centre[0] + math.cos(angle) * reach, centre[1] + math.sin(angle) * reach)
        pen.line((centre, end), fill=(60, 60, 70), width=1)
    for r in (0.2, 0.45, 0.75)[: 1 + SEVERITIES.index(severity)]:
        pen.ellipse(
            (
                centre[0] - reach * r,
                centre[1] - reach * r,
                centre[0] + reach * r,
                centre[1] + reach * r,
            ),
            outline=(70, 70, 80),
        )
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(mask).ellipse((x0, y0, x1, y1), fill=255)
    image.paste(layer, (0, 0), mask)
    return _damage(kind, part, severity, x0, y0, x1, y1, _ellipse_polygon(x0, y0, x1, y1))


def _paint_lamp(image, canvas, rng, shape, severity, colour, kind, part) -> Damage:
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = canvas.box(shape)  # a broken lamp covers the whole lamp unit
    holes = {"minor": 2, "moderate": 4, "severe": 7}[severity]
    for _ in range(holes):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        r = (x1 - x0) * rng.uniform(0.1, 0.25)
        draw.polygon(
            [
                (
                    cx + r * math.cos(a) * rng.uniform(0.5, 1.2),
                    cy + r * math.sin(a) * rng.uniform(0.5, 1.2),
                )
                for a in (i * math.pi / 3 for i in range(6))
            ],
            fill=(20, 20, 20),
        )
    draw.line((x0, y0, x1, y1), fill=(10, 10, 10), width=2)
    return _damage(kind, part, severity, x0, y0, x1, y1, _ellipse_polygon(x0, y0, x1, y1))


def _paint_flat(image, canvas, rng, shape, severity, colour, kind, part) -> Damage:
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = canvas.box(shape)
    squash = {"minor": 0.12, "moderate": 0.25, "severe": 0.4}[severity]
    bulge = (x1 - x0) * squash
    # A flat tyre bulges sideways where it meets the ground, and the rim sinks towards it.
    middle = (y0 + y1) / 2
    draw.polygon(
        [(x0, middle), (x1, middle), (x1 + bulge, y1), (x0 - bulge, y1)], fill=(20, 20, 22)
    )
    rim_w, rim_h = (x1 - x0) * 0.22, (y1 - y0) * 0.18
    cx, cy = (x0 + x1) / 2, middle + (y1 - middle) * squash * 1.5
    draw.ellipse((cx - rim_w, cy - rim_h, cx + rim_w, cy + rim_h), fill=(140, 140, 145))
    return _damage(kind, part, severity, x0 - bulge, y0, x1 + bulge, y1)


def _bounded(kind, part, severity, points) -> Damage:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    return _damage(kind, part, severity, x0, y0, x1, y1)


_PAINTERS = {
    "dent": _paint_dent,
    "scratch": _paint_scratch,
    "crack": _paint_crack,
    "glass_shatter": _paint_shatter,
    "lamp_broken": _paint_lamp,
    "tire_flat": _paint_flat,
}
assert set(_PAINTERS) == set(DAMAGE_TYPES)


def _lighting(image, rng: random.Random):
    import numpy as np

    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.75, 1.15)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def image_record(
    image_id: int, file_name: str, view: str, damages: list[Damage], rng: random.Random, split: str
) -> dict[str, Any]:
    """The COCO image entry with tunegraph's per-image fields; its ``cost`` is one workshop's
    quote for all its damages, on a vehicle and in a region that the photo does not show."""
    worst = max(damages, key=lambda d: SEVERITIES.index(d.severity))
    # one draw of the photos' generator, as before the hidden factors, so the photos after
    # this one stay the same pictures; the factors come from a generator of their own
    costs = random.Random(rng.random())
    factors = draw_factors(costs)
    cost = sum(repair_cost(d.part, d.type, d.severity, factors) for d in damages)
    cost *= quote_noise(costs)
    return {
        "id": image_id,
        "file_name": file_name,
        "width": WIDTH,
        "height": HEIGHT,
        "view": view,
        "severity": worst.severity,
        "part": worst.part,
        "cost": round(cost / 10) * 10,
        "split": split,
    }


def annotation_records(image_id: int, damages: list[Damage], first_id: int) -> list[dict]:
    return [
        {
            "id": first_id + i,
            "image_id": image_id,
            "category_id": DAMAGE_TYPES.index(d.type) + 1,
            "bbox": d.bbox,
            "area": round(d.bbox[2] * d.bbox[3], 1),
            "segmentation": [d.polygon],
            "iscrowd": 0,
            "part": d.part,
            "severity": d.severity,
        }
        for i, d in enumerate(damages)
    ]


def categories() -> list[dict[str, Any]]:
    return [
        {"id": i, "name": name, "supercategory": "damage"} for i, name in enumerate(DAMAGE_TYPES, 1)
    ]


def save_jpeg(image, path: Path) -> None:
    image.save(path, format="JPEG", quality=90)
