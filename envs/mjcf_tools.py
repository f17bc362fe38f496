"""Programmatic edits of MJCF (MuJoCo XML) models: load brax's shipped robots, generate maze walls
from a layout, add free objects, and set which geoms collide.

The robots come from the installed brax package (`brax/envs/assets/*.xml`) and are modified here
with `xml.etree`, so no model file is vendored into this project.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from importlib import resources

import numpy as np

from envs import maze_layouts

# Collision bits. MuJoCo collides two geoms when (contype1 & conaffinity2) | (contype2 &
# conaffinity1) is non-zero. Robot geoms carry TOUCH (and WALL if they should also be stopped by
# maze walls) in contype and nothing in conaffinity, so a robot never collides with itself
# (cheap, and what brax's ant/humanoid do). The floor (conaffinity 1 in brax's assets) and
# objects carry TOUCH in conaffinity, walls carry WALL: robot geoms without WALL cost nothing
# in the (expensive) robot-wall collision checks.
TOUCH = 1
WALL = 2


def brax_asset(name: str) -> ET.Element:
    """Parse one of the robot models shipped inside the brax package (e.g. 'ant', 'humanoid')."""
    path = resources.files("brax") / "envs" / "assets" / f"{name}.xml"
    if not path.is_file():
        raise FileNotFoundError(f"brax ships no asset {name!r} (looked for {path})")
    return ET.fromstring(path.read_text())


def to_xml(root: ET.Element) -> str:
    """Serialise a model tree back to an MJCF string."""
    return ET.tostring(root, encoding="unicode")


def worldbody(root: ET.Element) -> ET.Element:
    """The model's <worldbody> element."""
    world = root.find("worldbody")
    if world is None:
        raise ValueError("MJCF model has no <worldbody>")
    return world


def find_named(root: ET.Element, tag: str, name: str) -> ET.Element:
    """The unique element `<tag name=name>` anywhere in the tree."""
    found = [el for el in root.iter(tag) if el.get("name") == name]
    if len(found) != 1:
        raise ValueError(f"expected one <{tag} name={name!r}>, found {len(found)}")
    return found[0]


def set_collision(root: ET.Element, geom_names: list[str], contype: int, conaffinity: int) -> None:
    """Set contype/conaffinity of the named geoms."""
    for name in geom_names:
        geom = find_named(root, "geom", name)
        geom.set("contype", str(contype))
        geom.set("conaffinity", str(conaffinity))


def set_custom_numeric(
    root: ET.Element, name: str, values: list[float] | np.ndarray, first: bool = False
) -> None:
    """Create or overwrite `<custom><numeric name=... data=...>` (brax reads its solver knobs and
    `init_qpos` from these; mjx reads `max_geom_pairs`). `first=True` moves it to the front."""
    custom = root.find("custom")
    if custom is None:
        custom = ET.SubElement(root, "custom")
    data = " ".join(f"{float(v):.6g}" for v in np.atleast_1d(np.asarray(values)))
    for numeric in custom.findall("numeric"):
        if numeric.get("name") == name:
            custom.remove(numeric)
    numeric = ET.Element("numeric", name=name, data=data)
    custom.insert(0 if first else len(custom), numeric)


def set_max_geom_pairs(root: ET.Element, max_pairs: int) -> None:
    """Ask mjx's collision driver to keep, per group of same-typed geom pairs, only the
    `max_pairs` pairs whose bounding spheres are closest (a broadphase: the narrow phase then
    runs on those only).

    mjx 3.x reads this value as `numeric_data[numeric_id]` (the id, not the data address), which
    is only right for the first <numeric>; so it is inserted first and then verified here.
    """
    set_custom_numeric(root, "max_geom_pairs", [max_pairs], first=True)
    import mujoco  # local: keep this module importable without the simulator

    model = mujoco.MjModel.from_xml_string(to_xml(root))
    numeric_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_NUMERIC, "max_geom_pairs")
    if int(model.numeric_data[numeric_id]) != max_pairs:
        raise RuntimeError("max_geom_pairs is not read back as set; mjx's numeric lookup changed")


def get_custom_numeric(root: ET.Element, name: str) -> np.ndarray | None:
    """Values of `<custom><numeric name=...>`, or None if absent."""
    custom = root.find("custom")
    if custom is None:
        return None
    for numeric in custom.findall("numeric"):
        if numeric.get("name") == name:
            return np.array([float(v) for v in numeric.get("data", "").split()])
    return None


def add_wall_boxes(
    root: ET.Element, mask: np.ndarray, cell_size: float, height: float, collide: bool, prefix: str
) -> None:
    """Add one static box geom per True cell of the [rows, cols] `mask`, placed in the world
    frame of `maze_layouts.cell_center`. `collide=False` makes them visual only.

    One box per cell (rather than merged runs) keeps every wall the same size, which is what
    mjx's broadphase (`set_max_geom_pairs`) ranks well: it sorts pairs by distance between
    bounding spheres, and one long wall's huge bounding sphere would always rank first.
    """
    world = worldbody(root)
    half = (cell_size / 2, cell_size / 2, height / 2)
    for row, col in np.argwhere(mask):
        x, y = maze_layouts.cell_center(np.array([row, col]), cell_size)
        ET.SubElement(
            world,
            "geom",
            name=f"{prefix}_{row}_{col}",
            type="box",
            pos=f"{x:.6g} {y:.6g} {height / 2:.6g}",
            size=" ".join(f"{v:.6g}" for v in half),
            contype="0",
            conaffinity=str(WALL if collide else 0),
            condim="3",
            rgba="0.45 0.45 0.5 1",
        )


def add_free_ball(
    root: ET.Element, name: str, radius: float, mass: float, damping: float, rgba: str
) -> None:
    """Append a free-floating sphere body (a `free` joint named `{name}_root`) to the worldbody;
    it collides with the robot and the floor. `damping` on its free joint stands in for rolling
    resistance so a kicked ball comes to rest."""
    body = ET.SubElement(worldbody(root), "body", name=name, pos=f"0 0 {radius}")
    ET.SubElement(
        body, "joint", name=f"{name}_root", type="free", damping=str(damping),
        armature="0", limited="false",
    )
    ET.SubElement(
        body, "geom", name=f"{name}_geom", type="sphere", size=str(radius), mass=str(mass),
        contype=str(TOUCH), conaffinity=str(TOUCH), condim="3", rgba=rgba,
    )


def add_sliding_block(
    root: ET.Element,
    name: str,
    pos: np.ndarray,
    half_size: np.ndarray,
    axis: str,
    slide_range: tuple[float, float],
    mass: float,
    damping: float,
    rgba: str,
) -> None:
    """Append a box body that slides along one world axis ('x' or 'y') within `slide_range` of its
    start `pos`. The joint limit (not box-box contacts) keeps it out of the walls, and `damping`
    stands in for floor friction; it collides with the robot only."""
    axis_vec = {"x": "1 0 0", "y": "0 1 0"}[axis]
    body = ET.SubElement(
        worldbody(root), "body", name=name, pos=" ".join(f"{v:.6g}" for v in pos)
    )
    ET.SubElement(
        body, "joint", name=f"{name}_slide", type="slide", axis=axis_vec, limited="true",
        range=f"{slide_range[0]:.6g} {slide_range[1]:.6g}", damping=str(damping),
        armature="0", margin="0.01",
    )
    ET.SubElement(
        body, "geom", name=f"{name}_geom", type="box",
        size=" ".join(f"{v:.6g}" for v in half_size), mass=str(mass),
        contype="0", conaffinity=str(TOUCH), condim="3", rgba=rgba,
    )


def add_goal_marker(
    root: ET.Element, name: str, height: float, radius: float, mass: float, rgba: str
) -> None:
    """Append the references' humanoid goal marker: a sphere at `height` that moves on two world
    slide joints (`{name}_x`, `{name}_y`, unlimited) and collides with nothing. Its 2 qpos,
    2 qvel and one link are part of the references' 268-d humanoid observation, so crl keeps
    it (also shows the goal in renders)."""
    body = ET.SubElement(worldbody(root), "body", name=name, pos=f"0 0 {height:.6g}")
    for axis, vec in (("x", "1 0 0"), ("y", "0 1 0")):
        ET.SubElement(
            body, "joint", name=f"{name}_{axis}", type="slide", axis=vec, limited="false",
            damping="0", stiffness="0", armature="0",
        )
    ET.SubElement(
        body, "geom", name=f"{name}_geom", type="sphere", size=f"{radius:.6g}",
        mass=f"{mass:.6g}", contype="0", conaffinity="0", rgba=rgba,
    )
