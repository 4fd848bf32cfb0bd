"""Plain-text tables for the benchmark reports."""

from typing import List, Sequence


def format_table(header: Sequence[str], rows: List[Sequence[object]]) -> str:
  """Right-aligned columns separated by '|', with a rule under the header."""
  widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
  lines = [' | '.join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
  lines.insert(1, '-+-'.join('-' * width for width in widths))
  return '\n'.join(lines)
