"""Maze layouts as data, shared by the point-mass mazes and the ant/humanoid mazes.

Each layout is a list of equal-length strings, row 0 at the top:
  '#' wall, '.' free, 'R' free start cell, 'G' free cell a goal may be sampled in.
The open-room/U/big/hardest shapes follow the D4RL/JaxGCRL maze designs (public facts);
`u_maze(n)` builds the longer U mazes (u4, u5) whose arms are n cells long.
"""

from __future__ import annotations

import numpy as np

OPEN = [
    "#######",
    "#R....#",
    "#.GGG.#",
    "#.GGG.#",
    "#.GGG.#",
    "#######",
]

U = [
    "#####",
    "#RGG#",
    "###G#",
    "#GGG#",
    "#####",
]

BIG = [
    "########",
    "#RG##GG#",
    "#GG#GGG#",
    "##GGG###",
    "#GG#GGG#",
    "#G#GG#G#",
    "#GGG#GG#",
    "########",
]

HARDEST = [
    "############",
    "#RGGG#GGGGG#",
    "#G##G#G#G#G#",
    "#GGGGGG#GGG#",
    "#G####G###G#",
    "#GG#G#GGGGG#",
    "##G#G#G#G###",
    "#GG#GGG#GGG#",
    "############",
]


def u_maze(arm: int) -> list[str]:
    """A U-shaped corridor: start at the end of the top arm, goals along the far end of the
    bottom arm. `arm` is the number of cells along each arm."""
    if arm < 2:
        raise ValueError(f"u_maze arm must be >= 2, got {arm}")
    width = arm + 2
    top = "#R" + "." * (arm - 1) + "#"
    middle = "#" * (width - 2) + ".#"
    bottom = "#" + "G" * (arm // 2) + "." * (arm - arm // 2) + "#"
    return ["#" * width, top, middle, bottom, "#" * width]


LAYOUTS: dict[str, list[str]] = {
    "open": OPEN,
    "u": U,
    "u4": u_maze(4),
    "u5": u_maze(5),
    "big": BIG,
    "hardest": HARDEST,
}


def as_grid(layout: list[str]) -> np.ndarray:
    """Character grid [rows, cols] after checking the layout is rectangular and closed."""
    widths = {len(row) for row in layout}
    if len(widths) != 1:
        raise ValueError(f"maze rows differ in length: {sorted(widths)}")
    grid = np.array([list(row) for row in layout])
    border = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
    if not (border == "#").all():
        raise ValueError("maze must be enclosed by walls ('#') on every side")
    if not (grid == "R").any() or not (grid == "G").any():
        raise ValueError("maze needs at least one 'R' start cell and one 'G' goal cell")
    return grid


def wall_mask(layout: list[str]) -> np.ndarray:
    """Boolean [rows, cols], True where a wall is."""
    return as_grid(layout) == "#"


def cells(layout: list[str], kinds: str) -> np.ndarray:
    """(row, col) int array of the cells whose character is in `kinds`."""
    grid = as_grid(layout)
    return np.argwhere(np.isin(grid, list(kinds)))


def cell_center(rowcol: np.ndarray, cell_size: float) -> np.ndarray:
    """World (x, y) of cell centres: x grows with the column, y grows upward (row 0 at top);
    the maze's top-left corner is the origin's top-left, i.e. row r spans y in
    [-(r+1)·size, -r·size]. Works on [..., 2] arrays."""
    rowcol = np.asarray(rowcol, dtype=np.float64)
    x = (rowcol[..., 1] + 0.5) * cell_size
    y = -(rowcol[..., 0] + 0.5) * cell_size
    return np.stack([x, y], axis=-1)
