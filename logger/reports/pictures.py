"""Pictures of test results, drawn with Pillow (no plotting library needed): a confusion
matrix, a grid of captioned samples (a classifier's surest mistakes, the worst
reconstructions), a scatter of predicted against true values and a histogram."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

BLANK, INK = (255, 255, 255), (0, 0, 0)
DARKEST = (8, 48, 107)  # the shade of a cell holding all of its row's samples
GRID = (225, 225, 225)  # the lines between cells
FONT_SIZE = 12
LINE = FONT_SIZE + 4  # pixels per line of text
MARGIN = 8
TILE = 112  # pixels on the long side of each sample in a grid
NAME_LENGTH = 18  # characters of a class name shown on an axis
PLOT = (360, 320)  # pixels, the plot area of a chart
BINS = 40  # the bars of a histogram
MARK = (31, 119, 180)  # the colour of a chart's points and bars
IDENTITY = (214, 39, 40)  # the colour of the identity line


def text_font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _fit(text: str, width: float, font: ImageFont.ImageFont, after: str = "") -> str:
    """`text` + `after`, with `text` cut short by '…' so that it is at most `width` pixels."""
    if font.getlength(text + after) <= width:
        return text + after
    while text and font.getlength(text + "…" + after) > width:
        text = text[:-1]
    return text + "…" + after


def confusion_matrix_picture(confusion: torch.Tensor, names: list[str], title: str) -> Image.Image:
    """The (C, C) counts as a grid: rows the true class, columns the predicted one, each cell
    shaded by its share of the row (the class's samples), its count written in it when the
    count fits. Class names label the axes when there is room, else every few indices."""
    font = text_font()
    n_classes = len(confusion)
    cell = max(2, min(44, 600 // n_classes))  # pixels per cell
    shares = confusion / confusion.sum(1, keepdim=True).clamp_min(1)  # (C, C) of each row
    every = math.ceil(LINE / cell)  # label every class, or every few when cells are small
    labels = [names[k][:NAME_LENGTH] if every == 1 else str(k) for k in range(n_classes)]
    label_width = math.ceil(max(font.getlength(label) for label in labels[::every])) + MARGIN
    matrix_size = cell * n_classes
    left = MARGIN + LINE + label_width  # the axis title, then the row labels
    top = MARGIN + 2 * LINE  # the title
    size = (max(left + matrix_size, font.getlength(title)) + MARGIN,
            top + matrix_size + label_width + LINE + MARGIN)  # fmt: skip
    picture = Image.new("RGB", tuple(math.ceil(s) for s in size), BLANK)
    draw = ImageDraw.Draw(picture)
    draw.text((MARGIN, MARGIN), title, fill=INK, font=font)
    draw.text((MARGIN, MARGIN + LINE), "shade: share of the true class's samples",
              fill=INK, font=font)  # fmt: skip
    picture.paste(_matrix(confusion, shares, cell), (left, top))
    draw.rectangle((left - 1, top - 1, left + matrix_size, top + matrix_size), outline=INK)
    for k in range(0, n_classes, every):
        middle = k * cell + cell / 2
        draw.text((left - MARGIN / 2, top + middle), labels[k], anchor="rm", fill=INK, font=font)
        column = rotated_text(labels[k], font)  # read bottom to top, below its column
        picture.paste(column, (round(left + middle - column.width / 2), top + matrix_size + 4))
    draw.text((left + matrix_size / 2, size[1] - MARGIN), "predicted class", anchor="md",
              fill=INK, font=font)  # fmt: skip
    axis = rotated_text("true class", font)
    picture.paste(axis, (MARGIN, round(top + matrix_size / 2 - axis.height / 2)))
    return picture


def _matrix(confusion: torch.Tensor, shares: torch.Tensor, cell: int) -> Image.Image:
    """The cells, `cell` pixels each, shaded by `shares`; where there is room, lines between
    them and each count that fits written in its cell."""
    size = cell * len(confusion)
    blank = torch.tensor(BLANK)
    colours = blank + shares[..., None] * (torch.tensor(DARKEST) - blank)  # (C, C, 3)
    colours = colours.round().to(torch.uint8).numpy()
    matrix = Image.fromarray(colours).resize((size, size), Image.Resampling.NEAREST)
    if cell < LINE:
        return matrix
    draw, font = ImageDraw.Draw(matrix), text_font()
    for k in range(1, len(confusion)):
        draw.line((k * cell, 0, k * cell, size), fill=GRID)
        draw.line((0, k * cell, size, k * cell), fill=GRID)
    for true, row in enumerate(confusion.tolist()):
        for predicted, count in enumerate(row):
            if count and font.getlength(str(count)) <= cell - 4:
                middle = (predicted * cell + cell / 2, true * cell + cell / 2)
                fill = BLANK if shares[true, predicted].item() > 0.5 else INK
                draw.text(middle, str(count), anchor="mm", font=font, fill=fill)
    return matrix


def rotated_text(text: str, font: ImageFont.ImageFont) -> Image.Image:
    """`text` turned a quarter to the left, on white."""
    strip = Image.new("RGB", (math.ceil(font.getlength(text)) + 2, LINE), BLANK)
    ImageDraw.Draw(strip).text((1, LINE / 2), text, anchor="lm", fill=INK, font=font)
    return strip.rotate(90, expand=True)


def sample_grid(
    images: torch.Tensor, captions: list[list[tuple[str, str]]], title: str, tile: int = TILE
) -> Image.Image:
    """A grid of images (K, C, H, W) with 1, 3 or 4 channels, each scaled to its own range and
    to about `tile` pixels on its long side, with two caption lines under each: `captions[k]`
    holds (text, ending) pairs, the text cut short where a line is too long, never its
    ending (a probability, say)."""
    from torchvision.utils import make_grid  # slow import, only when drawn

    font = text_font()
    images = _tiles(images.float(), tile)  # (K, 3, h, w) in [0, 1]
    images = F.pad(images, (0, 0, 0, 2 * LINE), value=1.0)  # white room for the captions
    columns = math.ceil(math.sqrt(len(images)))
    padding = 4
    grid = make_grid(images, nrow=columns, padding=padding, pad_value=1.0)  # (3, H, W)
    pixels = grid.mul(255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
    header = MARGIN + LINE
    width = max(grid.shape[2], math.ceil(font.getlength(title)) + 2 * MARGIN)
    picture = Image.new("RGB", (width, grid.shape[1] + header), BLANK)
    picture.paste(Image.fromarray(pixels), (0, header))
    draw = ImageDraw.Draw(picture)
    draw.text((MARGIN, MARGIN), title, fill=INK, font=font)
    tile_height, tile_width = images.shape[2] + padding, images.shape[3] + padding
    width = images.shape[3] - 2
    for index, lines in enumerate(captions):
        x = padding + (index % columns) * tile_width + 1
        y = header + padding + (index // columns) * tile_height + images.shape[2] - 2 * LINE + 1
        for row, (text, ending) in enumerate(lines[:2]):
            draw.text((x, y + row * LINE), _fit(text, width, font, ending), fill=INK, font=font)
    return picture


def _tiles(images: torch.Tensor, tile: int) -> torch.Tensor:
    """(K, C, H, W) -> (K, 3, h, w) in [0, 1]: each image scaled to its own range (the
    inputs are normalised, their range unknown), grey or RGB (alpha dropped), and resized so
    that its long side is about `tile` pixels (enlarged by a whole factor, keeping pixels
    sharp), and at least `TILE` wide."""
    images = images[:, :3] if images.shape[1] == 4 else images.expand(-1, 3, -1, -1)
    low = images.amin((1, 2, 3), keepdim=True)
    high = images.amax((1, 2, 3), keepdim=True)
    images = (images - low) / (high - low).clamp_min(1e-12)
    long_side = max(images.shape[2:])
    if long_side * 2 <= tile:
        images = F.interpolate(images, scale_factor=tile // long_side, mode="nearest")
    elif long_side > tile:
        size = [round(side * tile / long_side) for side in images.shape[2:]]
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True).clamp(0, 1)
    room = max(TILE - images.shape[3], 0)  # a narrow image gets white beside it (captions)
    return F.pad(images, (room // 2, room - room // 2), value=1.0)


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
        pixels = np.array(self.picture)  # (H, W, 3), a copy to draw into
        columns, rows = self.pixel(x.double(), y.double())
        inside = (columns >= self.left + 1) & (columns < self.left + PLOT[0] - 1)
        inside &= (rows >= self.top + 1) & (rows < self.top + PLOT[1] - 1)  # NaN is outside
        columns, rows = columns[inside].long().numpy(), rows[inside].long().numpy()
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


def histogram_picture(values: torch.Tensor, title: str, x_label: str) -> Image.Image:
    """How many of the finite `values` (N,) fall into each of `BINS` equal bins, with a line at
    zero when it is in range."""
    values = values[torch.isfinite(values)].double()
    low, high = padded_range(values)
    counts = torch.histc(values, BINS, low, high) if len(values) else torch.zeros(BINS)
    chart = Chart(title, x_label, "values", (low, high), (0.0, max(counts.max().item(), 1) * 1.05))
    width = (high - low) / BINS
    for index, count in enumerate(counts.tolist()):
        if count:  # at least one pixel high: one outlier beside thousands still shows
            left, top = chart.pixel(low + index * width, count)
            right, bottom = chart.pixel(low + (index + 1) * width, 0.0)
            chart.draw.rectangle((left, min(top, bottom - 1), right - 1, bottom - 1), fill=MARK)
    if low < 0 < high:
        chart.draw.line((*chart.pixel(0.0, chart.y_range[1]), *chart.pixel(0.0, 0.0)),
                        fill=IDENTITY, width=2)  # fmt: skip
    return chart.picture
