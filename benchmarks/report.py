"""Collecting repeated measurements and printing them as one table."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass
class Series:
    """Repeated measurements of one contender in one scenario."""

    section: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def span(self, digits: int) -> str:
        if not self.values:
            return "-"
        if len(self.values) == 1:
            return "(1 run)"
        return f"{min(self.values):.{digits}f}–{max(self.values):.{digits}f}"


class Results:
    """Every series of a benchmark run, in the order first measured."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], Series] = {}

    def add(self, section: str, name: str, value: float, unit: str) -> None:
        key = (section, name)
        if key not in self._series:
            self._series[key] = Series(section, name, unit)
        self._series[key].values.append(value)

    def get(self, section: str, name: str) -> Series | None:
        return self._series.get((section, name))

    def median(self, section: str, name: str) -> float:
        series = self.get(section, name)
        return series.median if series else float("nan")

    def sections(self) -> list[str]:
        return list(dict.fromkeys(section for section, _ in self._series))

    def in_section(self, section: str) -> list[Series]:
        return [s for (sec, _), s in self._series.items() if sec == section]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p90 of 50 samples is the 45th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (readable in a terminal and pasteable into the README)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)
