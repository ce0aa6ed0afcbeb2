"""Charts drawn with Pillow (no plotting library needed): a scatter of predicted against true
values with the identity line, and a histogram."""

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from logger.reports.pictures import BLANK, GRID, INK, LINE, MARGIN, rotated_text, text_font

PLOT = (360, 320)  # pixels, the plot area
MARK = (31, 119, 180)  # the colour of the points and bars
IDENTITY = (214, 39, 40)  # the colour of the identity line


def ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values in [low, high] to label an axis: multiples of 1, 2 or 5 times a power of
    ten, at most `most` of them."""
    span = high - low
    for power in range(math.floor(math.log10(span)) - 1, math.floor(math.log10(span)) + 2):
        for step in (10**power, 2 * 10**power, 5 * 10**power):
            first = math.ceil(low / step)
            count = math.floor(high / step) - first + 1
            if count <= most:
                return [(first + k) * step for k in range(count)]
    return [low, high]


def padded_range(values: torch.Tensor) -> tuple[float, float]:
    """The range of the finite `values`, widened by 5% on each side (by 1 when they are all
    one value, or absent)."""
    finite = values[torch.isfinite(values)]
    if not len(finite):
        return -1.0, 1.0
    low, high = finite.min().item(), finite.max().item()
    margin = (high - low) * 0.05 or max(abs(low), 1.0)
    return low - margin, high + margin


class Chart:
    """A picture with a title, one plot area, its frame, ticks and axis titles; `pixel` maps
    data coordinates into the plot area."""

    def __init__(self, title: str, x_label: str, y_label: str,
                 x_range: tuple[float, float], y_range: tuple[float, float]) -> None:  # fmt: skip
        self.font = text_font()
        self.left, self.top = 2 * MARGIN + LINE + 56, MARGIN + 2 * LINE  # room for the labels
        width = max(self.left + PLOT[0] + 3 * MARGIN, self.font.getlength(title) + 2 * MARGIN)
        height = self.top + PLOT[1] + 3 * LINE + MARGIN
        self.picture = Image.new("RGB", (math.ceil(width), height), BLANK)
        self.draw = ImageDraw.Draw(self.picture)
        self.x_range, self.y_range = x_range, y_range
        self.draw.text((MARGIN, MARGIN), title, fill=INK, font=self.font)
        right, bottom = self.left + PLOT[0], self.top + PLOT[1]
        for value in ticks(*x_range):
            x, _ = self.pixel(value, y_range[0])
            self.draw.line((x, self.top, x, bottom), fill=GRID)
            self.draw.text((x, bottom + 4), f"{value:.4g}", anchor="mt", fill=INK, font=self.font)
        for value in ticks(*y_range):
            _, y = self.pixel(x_range[0], value)
            self.draw.line((self.left, y, right, y), fill=GRID)
            self.draw.text((self.left - 4, y), f"{value:.4g}", anchor="rm", fill=INK,
                           font=self.font)  # fmt: skip
        self.draw.rectangle((self.left, self.top, right, bottom), outline=INK)
        self.draw.text((self.left + PLOT[0] / 2, bottom + LINE + 8), x_label, anchor="mt",
                       fill=INK, font=self.font)  # fmt: skip
        strip = rotated_text(y_label, self.font)
        self.picture.paste(strip, (MARGIN, round(self.top + PLOT[1] / 2 - strip.height / 2)))

    def pixel(self, x: float, y: float) -> tuple[float, float]:
        (x_low, x_high), (y_low, y_high) = self.x_range, self.y_range
        return (self.left + (x - x_low) / (x_high - x_low) * PLOT[0],
                self.top + (y_high - y) / (y_high - y_low) * PLOT[1])  # fmt: skip

    def dots(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """A 3x3-pixel dot at each finite point (N,) inside the plot area."""
        pixels = np.asarray(self.picture)  # (H, W, 3), a copy to draw into
        columns, rows = self.pixel(x.double(), y.double())
        inside = (columns >= self.left + 1) & (columns < self.left + PLOT[0] - 1)
        inside &= (rows >= self.top + 1) & (rows < self.top + PLOT[1] - 1)  # NaN is outside
        columns, rows = columns[inside].long().numpy(), rows[inside].long().numpy()
        pixels = pixels.copy()
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                pixels[rows + dy, columns + dx] = MARK
        self.picture.paste(Image.fromarray(pixels))


def scatter_picture(true: torch.Tensor, predicted: torch.Tensor, title: str) -> Image.Image:
    """Predicted (N,) against true (N,) values, on one scale for both axes, with the line
    where they are equal."""
    low, high = padded_range(torch.cat([true, predicted]))
    chart = Chart(title, "true value", "predicted value", (low, high), (low, high))
    chart.dots(true, predicted)
    chart.draw.line((*chart.pixel(low, low), *chart.pixel(high, high)), fill=IDENTITY, width=2)
    return chart.picture


def histogram_picture(
    values: torch.Tensor, title: str, x_label: str, bins: int = 40
) -> Image.Image:
    """How many of the finite `values` (N,) fall into each of `bins` equal bins, with a line at
    zero when it is in range."""
    values = values[torch.isfinite(values)].double()
    low, high = padded_range(values)
    counts = torch.histc(values, bins, low, high) if len(values) else torch.zeros(bins)
    chart = Chart(title, x_label, "samples", (low, high), (0.0, max(counts.max().item(), 1) * 1.05))
    width = (high - low) / bins
    for index, count in enumerate(counts.tolist()):
        if count:
            left, top = chart.pixel(low + index * width, count)
            right, bottom = chart.pixel(low + (index + 1) * width, 0.0)
            chart.draw.rectangle((left, top, right - 1, bottom - 1), fill=MARK)
    if low < 0 < high:
        chart.draw.line((*chart.pixel(0.0, chart.y_range[1]), *chart.pixel(0.0, 0.0)),
                        fill=IDENTITY, width=2)  # fmt: skip
    return chart.picture
