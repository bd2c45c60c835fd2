"""Listings that stay readable at any width: a table when it fits, else one block per row.

A table with six text columns in 80 columns truncates every cell to "…". So
:func:`print_listing` prints the table only when the console is at least
``wide`` columns; below that (an 80-column terminal, or a pipe, which rich
treats as 80 columns unless ``COLUMNS`` says otherwise) each row becomes a
block: its name in bold, then one ``label  value`` line per field, values
wrapped at word boundaries, never cut.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

__all__ = ["print_listing"]


def print_listing(console: Console, title: str, columns: Sequence[str],
                  rows: Sequence[Sequence[str]], *, wide: int = 120) -> None:
    """Print ``rows`` (first cell: the name) as a table or as stacked blocks.

    Args:
        console: where to print (its ``width`` decides the layout).
        title: printed above the listing.
        columns: the column labels, the name's first.
        rows: one sequence of cell texts per row, in ``columns`` order.
        wide: the narrowest console that gets the table.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> print_listing(Console(file=out, width=40), "pets", ["name", "sound"],
        ...               [["cat", "meow"]])
        >>> print(out.getvalue().strip())
        pets
        <BLANKLINE>
        cat
          sound  meow
    """
    if console.width >= wide:
        table = Table(title=title, show_lines=True)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    console.print(Text(title, style="bold"))
    label_width = max(len(c) for c in columns[1:])
    for row in rows:
        console.print()
        console.print(Text(row[0], style="bold"), no_wrap=False)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(width=label_width, no_wrap=True, style="dim")
        grid.add_column(overflow="fold")
        for label, value in zip(columns[1:], row[1:], strict=True):
            grid.add_row(label, value)
        console.print(Padding(grid, (0, 0, 0, 2)))
