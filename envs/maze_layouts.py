"""Maze layouts as data, shared by the point-mass mazes and the ant/humanoid mazes.

Each layout is a list of equal-length strings, row 0 at the top:
  '#' wall, '.' free, 'R' free start cell, 'G' free cell a goal may be sampled in.
The U/U4/U5/big/hardest shapes and their `*_eval` versions are those of the authors' code
(scaling-crl envs/ant_maze.py, envs/humanoid_maze.py; JaxGCRL has the same), row for row; the
references put row i at x = i·size, column j at y = j·size, crl at x = col, y = -row (see
`cell_center`), a reflection of the same maze. The open room is crl's own (point mass).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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

# Evaluation layouts: the same walls, goals only in the far part of the maze (the authors'
# `*_eval` layouts: their '0' cells are '.' here).
U_EVAL = [
    "#####",
    "#R..#",
    "###.#",
    "#GGG#",
    "#####",
]

# The authors' longer U mazes (scaling-crl envs/ant_maze.py U4_MAZE / U5_MAZE and their evals):
# the start sits at the end of one arm, the corridor wraps around an inner wall.
U4 = [
    "#####",
    "#GGG#",
    "#R#G#",
    "###G#",
    "#G#G#",
    "#GGG#",
    "#####",
]

U4_EVAL = [
    "#####",
    "#...#",
    "#R#.#",
    "###.#",
    "#G#.#",
    "#GGG#",
    "#####",
]

U5 = [
    "########",
    "#GGGGGG#",
    "#R####G#",
    "######G#",
    "#G####G#",
    "#GGGGGG#",
    "########",
]

U5_EVAL = [
    "########",
    "#......#",
    "#R####.#",
    "######.#",
    "#G####G#",
    "#GGGGGG#",
    "########",
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

# The ant's and the humanoid's big-maze eval layouts differ by one goal cell (row 2, col 5)
# in the references (ant_maze.py vs humanoid_maze.py); both are kept as they are.
BIG_EVAL = [
    "########",
    "#R.##GG#",
    "#..#..G#",
    "##...###",
    "#..#...#",
    "#.#G.#G#",
    "#.GG#GG#",
    "########",
]

HUMANOID_BIG_EVAL = [
    "########",
    "#R.##GG#",
    "#..#.GG#",
    "##...###",
    "#..#...#",
    "#.#G.#G#",
    "#.GG#GG#",
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


def snake(corridors: int, length: int, far_goals_only: bool = False) -> list[str]:
    """A serpentine maze (crl's own, for CPU depth studies): `corridors` horizontal corridors of
    `length` cells, joined at alternating ends, the start at the left end of the top corridor.
    The shortest path to the far end is corridors·length + corridors − 1 cells while the maze
    stays compact, so the distance to a goal folds back and forth over (x, y) once per corridor:
    the more corridors, the less linear the function the critic must represent.

    Goals: every free cell; `far_goals_only` keeps only the last corridor (the eval layout)."""
    if corridors < 2 or length < 2:
        raise ValueError(f"snake maze needs >= 2 corridors of >= 2 cells, got {corridors}x{length}")
    wall = "#" * (length + 2)
    rows = [wall]
    for index in range(corridors):
        last = index == corridors - 1
        cell = "G" if (last or not far_goals_only) else "."
        corridor = [cell] * length
        if index == 0:
            corridor[0] = "R"
        rows.append("#" + "".join(corridor) + "#")
        if not last:  # a separating wall with one gap, at the right end after even corridors
            gap = length if index % 2 == 0 else 1
            separator = ["#"] * (length + 2)
            separator[gap] = "G" if not far_goals_only else "."
            rows.append("".join(separator))
    rows.append(wall)
    return rows


LAYOUTS: dict[str, list[str]] = {
    "open": OPEN,
    "u": U,
    "u_eval": U_EVAL,
    "u4": U4,
    "u4_eval": U4_EVAL,
    "u5": U5,
    "u5_eval": U5_EVAL,
    "big": BIG,
    "big_eval": BIG_EVAL,
    "humanoid_big_eval": HUMANOID_BIG_EVAL,
    "hardest": HARDEST,
    "snake3": snake(3, 6),
    "snake3_eval": snake(3, 6, far_goals_only=True),
    "snake5": snake(5, 6),
    "snake5_eval": snake(5, 6, far_goals_only=True),
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


def flat_cell_index(xy: jax.Array, shape: tuple[int, int], cell_size: float) -> jax.Array:
    """Inverse of `cell_center` for world points [..., 2] → flat cell index row·cols + col
    (int32), or −1 for points off the grid."""
    rows, cols = shape
    col = jnp.floor(xy[..., 0] / cell_size).astype(jnp.int32)
    row = jnp.floor(-xy[..., 1] / cell_size).astype(jnp.int32)
    inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
    return jnp.where(inside, row * cols + col, -1)
