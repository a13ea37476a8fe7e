"""Filter a batch of images in pure Python: a 3x3 Gaussian blur, then a Sobel edge map.

Each image is a grayscale picture stored as a flat ``array('B')`` (one byte per pixel, row
after row), built here from a seed so the example needs no files and no numpy. The parent
builds the images and sends them to the workers, which send the filtered images back: the
usual shape of image work, where the pixels travel both ways.

    python examples/image_filter.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from array import array

from _serial_baseline import plain_serial_s, serial_comparison

from amorsize_executor import AdaptiveProcessPoolExecutor as ProcessPoolExecutor

Image = tuple[int, int, array]
"""``(width, height, pixels)``; ``pixels[y * width + x]`` is the pixel at column x, row y."""

GAUSSIAN_3X3 = ((1, 2, 1), (2, 4, 2), (1, 2, 1))
GAUSSIAN_WEIGHT = 16
SOBEL_X = ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1))
SOBEL_Y = ((-1, -2, -1), (0, 0, 0), (1, 2, 1))


def synthetic_image(seed: int, width: int, height: int) -> Image:
    """A picture with a gradient background, a few bright discs and some noise."""
    rng = random.Random(seed)
    discs = [
        (rng.uniform(0, width), rng.uniform(0, height), rng.uniform(3, width / 4))
        for _ in range(4)
    ]
    gradient = [40 + 100 * x // width for x in range(width)]
    noise = rng.randbytes(width * height)
    pixels = array("B")
    for y in range(height):
        row = gradient.copy()
        for cx, cy, radius in discs:
            if abs(y - cy) <= radius:
                half = math.sqrt(radius * radius - (y - cy) ** 2)
                for x in range(max(0, math.ceil(cx - half)), min(width, int(cx + half) + 1)):
                    row[x] += 90
        row_noise = noise[y * width : (y + 1) * width]
        pixels.extend(
            min(255, max(0, v + n // 8 - 16)) for v, n in zip(row, row_noise, strict=True)
        )
    return width, height, pixels


def convolve(image: Image, kernel: tuple[tuple[int, ...], ...]) -> list[int]:
    """The 3x3 convolution of the image with ``kernel``; edge pixels repeat outwards."""
    width, height, pixels = image
    out = [0] * (width * height)
    (k00, k01, k02), (k10, k11, k12), (k20, k21, k22) = kernel
    for y in range(height):
        above = max(y - 1, 0) * width
        row = y * width
        below = min(y + 1, height - 1) * width
        for x in range(width):
            left = max(x - 1, 0)
            right = min(x + 1, width - 1)
            out[row + x] = (
                k00 * pixels[above + left]
                + k01 * pixels[above + x]
                + k02 * pixels[above + right]
                + k10 * pixels[row + left]
                + k11 * pixels[row + x]
                + k12 * pixels[row + right]
                + k20 * pixels[below + left]
                + k21 * pixels[below + x]
                + k22 * pixels[below + right]
            )
    return out


def blur_and_edges(image: Image) -> Image:
    """The work a worker does for one image: blur it, then return its edge strength."""
    width, height, _ = image
    blurred = convolve(image, GAUSSIAN_3X3)
    smooth: Image = (width, height, array("B", (v // GAUSSIAN_WEIGHT for v in blurred)))
    gx = convolve(smooth, SOBEL_X)
    gy = convolve(smooth, SOBEL_Y)
    edges = array("B", (min(255, int(math.hypot(a, b)) // 4) for a, b in zip(gx, gy, strict=True)))
    return width, height, edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small input: a few seconds")
    args = parser.parse_args()
    n_images, side = (24, 48) if args.quick else (160, 128)

    started = time.perf_counter()
    images = [synthetic_image(seed, side, side) for seed in range(n_images)]
    print(
        f"built {n_images} images of {side}x{side} pixels in {time.perf_counter() - started:.2f} s"
    )

    started = time.perf_counter()
    with ProcessPoolExecutor() as pool:
        filtered = list(pool.map(blur_and_edges, images))
        elapsed = time.perf_counter() - started
        plan = pool.last_plan
        assert plan is not None
        print(plan.explain())

    assert filtered[0] == blur_and_edges(images[0]), "a worker's result differs from serial"
    strong = [sum(1 for v in pixels if v > 32) / len(pixels) for _, _, pixels in filtered]
    print(
        f"filtered {len(filtered)} images in {elapsed:.2f} s; "
        f"edge pixels per image: {min(strong):.1%} to {max(strong):.1%}"
    )
    print(serial_comparison(elapsed, plain_serial_s(__file__, "blur_and_edges", images)))


if __name__ == "__main__":
    main()
