"""Bar-chart geometry for the index page; the template draws it as inline SVG (no JS).

Only numbers are computed here; labels stay plain text and the template escapes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["bar_chart"]


def bar_chart(
    title: str,
    items: Sequence[tuple[str, int, str]],
    *,
    width: int = 360,
    bar_height: int = 24,
    gap: int = 10,
    label_width: int = 136,
) -> dict[str, Any]:
    """Geometry of a horizontal bar chart.

    Args:
        title: the chart's title (also its accessible name).
        items: ``(label, count, colour)`` per bar, top to bottom.
        width: SVG width in user units.
        bar_height: height of one bar.
        gap: space between bars.
        label_width: space left of the bars for the labels.

    Returns:
        ``{"title", "width", "height", "bars": [{"label", "value", "colour", "x", "y", "w", "h",
        "text_x", "text_y"}]}``.
    """
    top = 8
    plot = width - label_width - 36  # room on the right for the count
    peak = max((count for _, count, _ in items), default=0) or 1
    bars = []
    for i, (label, count, colour) in enumerate(items):
        y = top + i * (bar_height + gap)
        w = round(plot * count / peak, 1)
        bars.append({
            "label": label,
            "value": count,
            "colour": colour,
            "x": label_width,
            "y": y,
            "w": max(w, 2.0) if count else 0.0,
            "h": bar_height,
            "text_x": label_width + max(w, 2.0) + 6,
            "text_y": y + bar_height * 0.68,
            "label_y": y + bar_height * 0.68,
        })
    height = top * 2 + len(items) * (bar_height + gap) - (gap if items else 0)
    return {"title": title, "width": width, "height": max(height, 1), "bars": bars, "label_x": label_width - 8}
