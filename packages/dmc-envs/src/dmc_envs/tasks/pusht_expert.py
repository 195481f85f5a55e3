"""A scripted PushT expert: push primitives chosen by simulating them on a private simulator.

gym-pusht's PushT ships no demonstrator (Diffusion Policy's demonstrations are human
teleoperation), so the `expert` datasets of `dmc_envs.tasks.pusht` come from this planner.

The physics makes a planner cheap and exact:
- the agent is a kinematic disc steered by a PD law towards the action (10 substeps of 0.01 s
  per step); contacts never change its motion, so its path is computed here in numpy, exactly;
- the block is quasi-static (`space.damping = 0` zeroes its velocity every substep): it moves
  only while the agent presses on it, so the state is agent position + agent velocity + block
  pose, and a plan whose agent path keeps clear of the block leaves the block where it is.

Each decision considers push primitives: a contact point on the T's outline (sampled every
`CONTACT_SPACING` pixels along its eight edges), reached by a collision-free route (a
visibility graph through a ring of waypoints around the block, followed by the PD law), then
`PUSH_STEPS` steps towards a point `depth` pixels inside the outline along the inward normal
and one step back out. Routes are computed in numpy; every (contact, depth) push is simulated
on a private copy of the pymunk space, set to the current state directly (no stepping from a
reset). The primitive with the least keypoint error to the goal after it (the mean distance
of the T's eight corners to the goal's, plus `STEP_COST` pixels per step used) is executed
open loop, and the planner decides again on the state it reaches. Coverage (shapely) is never
computed inside the planner.

References:
    Chi et al., "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion" (RSS 2023):
    PushT, its demonstrations and scoring; Florence et al., "Implicit Behavioral Cloning"
    (CoRL 2021): the PushT task; gym-pusht 0.1.8 (huggingface): `gym_pusht/envs/pusht.py`, the
    simulator (PD gains, substeps, block geometry, goal pose).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GOAL_POSE",
    "PushState",
    "PushTPlanner",
    "keypoint_error",
    "keypoints",
]

#: The goal pose of the block (x, y, angle), fixed in gym-pusht.
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])
AGENT_RADIUS = 15.0
#: The simulator's PD law and time step (gym-pusht: k_p 100, k_v 20, dt 0.01, 10 substeps).
K_P, K_V, DT, SUBSTEPS = 100.0, 20.0, 0.01, 10
#: The T's two rectangles in the block's frame: centres and half sizes (bar, stem).
_RECT_CENTRES = np.array([[0.0, 15.0], [0.0, 75.0]])
_RECT_HALVES = np.array([[60.0, 15.0], [15.0, 45.0]])
#: The T's eight corners in the block's frame (gym-pusht's keypoint order).
_CORNERS = np.array(
    [[-60, 0], [60, 0], [60, 30], [-60, 30], [-15, 30], [15, 30], [15, 120], [-15, 120]],
    dtype=np.float64,
)
#: The outline, counter-clockwise: (start, end, outward normal, inset at start, inset at end).
#: Insets keep contacts off the corners; at the two concave corners by the agent's radius.
_EDGES = (
    ((-60, 0), (60, 0), (0, -1), 4, 4),
    ((60, 0), (60, 30), (1, 0), 4, 4),
    ((60, 30), (15, 30), (0, 1), 4, 17),
    ((15, 30), (15, 120), (1, 0), 17, 4),
    ((15, 120), (-15, 120), (0, 1), 4, 4),
    ((-15, 120), (-15, 30), (-1, 0), 4, 17),
    ((-15, 30), (-60, 30), (0, 1), 17, 4),
    ((-60, 30), (-60, 0), (-1, 0), 4, 4),
)
#: The block's centre of gravity in its frame (the mean of the rectangles' centres).
_COG = np.array([0.0, 45.0])
#: Ring of route waypoints around the centre of gravity: farther than any corner plus the
#: agent's radius, so chords between neighbours clear the block.
_RING_RADIUS, _RING_NODES = 105.0, 12
#: Gap between the agent's disc and the outline at the start of a push (pixels).
_PRE_CONTACT_GAP = 2.0
#: Clearance a route keeps from the outline (the agent's radius plus a margin).
_ROUTE_CLEARANCE = AGENT_RADIUS + 1.0


@dataclass(frozen=True)
class PushState:
    """The simulator's whole state: agent position and velocity, block pose (x, y, angle)."""

    agent: np.ndarray
    velocity: np.ndarray
    block: np.ndarray


def keypoints(pose: np.ndarray) -> np.ndarray:
    """The T's corners in the world for block poses. Shapes: (..., 3) -> (..., 8, 2)."""
    pose = np.asarray(pose, dtype=np.float64)
    c, s = np.cos(pose[..., 2]), np.sin(pose[..., 2])
    rotation = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (..., 2, 2)
    return np.einsum("...ij,kj->...ki", rotation, _CORNERS) + pose[..., None, :2]


def keypoint_error(pose: np.ndarray) -> np.ndarray:
    """Mean distance (pixels) of the T's corners to the goal's. Shapes: (..., 3) -> (...)."""
    return np.linalg.norm(keypoints(pose) - keypoints(GOAL_POSE), axis=-1).mean(-1)


def clearance(points: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Signed distance of world points to the T at pose `block` (negative inside).

    Shapes: points (..., 2), block (3,) -> (...)."""
    c, s = np.cos(block[2]), np.sin(block[2])
    relative = np.asarray(points, dtype=np.float64) - block[:2]
    local = np.stack(
        [c * relative[..., 0] + s * relative[..., 1], -s * relative[..., 0] + c * relative[..., 1]],
        -1,
    )
    q = np.abs(local[..., None, :] - _RECT_CENTRES) - _RECT_HALVES  # (..., 2 rects, 2)
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = np.minimum(q.max(-1), 0.0)
    return (outside + inside).min(-1)


def _contacts(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Contact points on the outline and their outward normals, in the block's frame.

    Shapes: -> points (K, 2), normals (K, 2)."""
    points, normals = [], []
    for start, end, normal, inset_start, inset_end in _EDGES:
        a, b = np.asarray(start, float), np.asarray(end, float)
        length = np.linalg.norm(b - a)
        usable = length - inset_start - inset_end
        count = max(1, round(usable / spacing) + 1)
        along = np.linspace(inset_start, length - inset_end, count) if count > 1 else [length / 2]
        for t in along:
            points.append(a + (b - a) * t / length)
            normals.append(np.asarray(normal, float))
    return np.array(points), np.array(normals)


def _to_world(block: np.ndarray, local: np.ndarray, vectors: bool = False) -> np.ndarray:
    """Block-frame points (or directions, `vectors`) in the world. Shapes: (K, 2) -> (K, 2)."""
    c, s = np.cos(block[2]), np.sin(block[2])
    rotated = local @ np.array([[c, s], [-s, c]])
    return rotated if vectors else rotated + block[:2]


def pd_path(
    position: np.ndarray, velocity: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the simulator's PD law towards `target`, substep by substep.

    Returns the substep positions (SUBSTEPS, 2), and the final position and velocity (2,)."""
    positions = np.empty((SUBSTEPS, 2))
    p, v = position.copy(), velocity.copy()
    for k in range(SUBSTEPS):
        v = v + (K_P * (target - p) - K_V * v) * DT
        p = p + v * DT
        positions[k] = p
    return positions, p, v


class _Simulator:
    """A private pymunk space built by gym-pusht itself, set to states directly."""

    def __init__(self) -> None:
        from gym_pusht.envs.pusht import PushTEnv

        env = PushTEnv(obs_type="state")
        env._setup()
        self.space, self.agent, self.block = env.space, env.agent, env.block

    def run(self, state: PushState, targets: np.ndarray) -> np.ndarray:
        """The block pose (3,) after stepping from `state` with action targets (T, 2)."""
        self.agent.position = (float(state.agent[0]), float(state.agent[1]))
        self.agent.velocity = (float(state.velocity[0]), float(state.velocity[1]))
        # The angle first: pymunk turns a body about its centre of gravity, which would move
        # the position set before it (gym-pusht's own `_set_state` sets them the other way).
        self.block.angle = float(state.block[2])
        self.block.position = (float(state.block[0]), float(state.block[1]))
        self.block.velocity = (0.0, 0.0)
        self.block.angular_velocity = 0.0
        for target in targets:
            tx, ty = float(target[0]), float(target[1])
            for _ in range(SUBSTEPS):
                (px, py), (vx, vy) = self.agent.position, self.agent.velocity
                self.agent.velocity = (
                    vx + (K_P * (tx - px) - K_V * vx) * DT,
                    vy + (K_P * (ty - py) - K_V * vy) * DT,
                )
                self.space.step(DT)
        (bx, by), angle = self.block.position, self.block.angle
        return np.array([bx, by, angle])


@dataclass(frozen=True)
class _Route:
    """A collision-free approach: the per-step targets and the agent's state at its end."""

    targets: np.ndarray
    position: np.ndarray
    velocity: np.ndarray


class PushTPlanner:
    """Chooses and returns the next push primitive as action targets (module docstring).

    Args:
        depths: how far (pixels) inside the outline a push aims, one primitive per depth.
        contact_spacing: pixels between sampled contact points along an edge (more: fewer
            contacts, faster, weaker).
        push_steps: steps of each push.
        step_cost: pixels of keypoint error one step is worth (prefers short primitives).
    """

    def __init__(
        self,
        depths: tuple[float, ...] = (2.0, 5.0, 12.0, 25.0, 45.0),
        contact_spacing: float = 12.0,
        push_steps: int = 3,
        step_cost: float = 0.05,
    ) -> None:
        """Sample the contacts and build the private simulator."""
        self.depths = tuple(float(d) for d in depths)
        self.push_steps = int(push_steps)
        self.step_cost = float(step_cost)
        self.contact_points, self.contact_normals = _contacts(contact_spacing)
        self.simulator = _Simulator()

    def plan(self, state: PushState) -> np.ndarray:
        """The best primitive's action targets from `state`. Shapes: -> (T, 2), T >= 1."""
        points = _to_world(state.block, self.contact_points)
        normals = _to_world(state.block, self.contact_normals, vectors=True)
        pre_contacts = points + normals * (AGENT_RADIUS + _PRE_CONTACT_GAP)
        best_cost, best_targets = np.inf, None
        for k, route in self._routes(state, pre_contacts):
            for depth in self.depths:
                push = np.repeat(
                    points[k : k + 1] + normals[k] * (AGENT_RADIUS - depth), self.push_steps, 0
                )
                back = points[k : k + 1] + normals[k] * (AGENT_RADIUS + 12.0)
                targets = np.concatenate([route.targets, push, back])
                start = PushState(route.position, route.velocity, state.block)
                after = self.simulator.run(start, np.concatenate([push, back]))
                cost = float(keypoint_error(after)) + self.step_cost * len(targets)
                if cost < best_cost:
                    best_cost, best_targets = cost, targets
        if best_targets is None:  # no contact reachable: step away from the block
            return self._retreat(state)
        return np.clip(best_targets, 0.0, 512.0)

    def _routes(self, state: PushState, goals: np.ndarray) -> Iterator[tuple[int, _Route]]:
        """(index, route) for every contact whose pre-contact point a route reaches."""
        ring = self._ring(state.block)
        for k, goal in enumerate(goals):
            if clearance(goal, state.block) < _ROUTE_CLEARANCE or not _inside_arena(goal):
                continue
            waypoints = _shortest_path(state.agent, goal, ring, state.block)
            if waypoints is None:
                continue
            route = _follow(state, waypoints)
            if route is not None:
                yield k, route

    def _ring(self, block: np.ndarray) -> np.ndarray:
        """Route waypoints around the block. Shapes: -> (R, 2)."""
        centre = _to_world(block, _COG[None])[0]
        angles = np.arange(_RING_NODES) * 2 * np.pi / _RING_NODES
        return centre + _RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], -1)

    def _retreat(self, state: PushState) -> np.ndarray:
        """One target away from the block's centre. Shapes: -> (1, 2)."""
        away = state.agent - _to_world(state.block, _COG[None])[0]
        direction = away / max(np.linalg.norm(away), 1e-6)
        return np.clip(state.agent + 30.0 * direction, 0.0, 512.0)[None]


def _inside_arena(point: np.ndarray) -> bool:
    return bool(np.all(point > 10.0) and np.all(point < 502.0))


def _segment_clear(a: np.ndarray, b: np.ndarray, block: np.ndarray, needed: float) -> bool:
    """Whether the segment a-b keeps `needed` pixels from the T."""
    count = max(2, int(np.linalg.norm(b - a) / 3.0) + 1)
    samples = a + np.linspace(0.0, 1.0, count)[:, None] * (b - a)
    return bool(clearance(samples, block).min() >= needed)


def _shortest_path(
    start: np.ndarray, goal: np.ndarray, ring: np.ndarray, block: np.ndarray
) -> list[np.ndarray] | None:
    """Waypoints from `start` to `goal` (goal included) through the ring, or None."""
    start_needed = min(_ROUTE_CLEARANCE, float(clearance(start, block)) - 0.5)
    if _segment_clear(start, goal, block, start_needed):
        return [goal]
    nodes = [start, *ring, goal]
    n = len(nodes)
    dist = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(i + 1, n):
            ring_pair = 1 <= i <= _RING_NODES and 1 <= j <= _RING_NODES
            if ring_pair and (j - i) not in (1, _RING_NODES - 1):
                continue
            if i == 0 and j == n - 1:
                continue
            if not (_inside_arena(nodes[j]) or j == n - 1) or not (
                i == 0 or _inside_arena(nodes[i])
            ):
                continue
            needed = start_needed if i == 0 else _ROUTE_CLEARANCE
            if _segment_clear(nodes[i], nodes[j], block, needed):
                dist[i, j] = dist[j, i] = np.linalg.norm(nodes[j] - nodes[i])
    return _dijkstra(dist, nodes)


def _dijkstra(dist: np.ndarray, nodes: list[np.ndarray]) -> list[np.ndarray] | None:
    """Waypoints of the shortest path from node 0 to the last node (node 0 left out)."""
    n = len(nodes)
    best = np.full(n, np.inf)
    best[0] = 0.0
    previous = np.full(n, -1)
    done = np.zeros(n, dtype=bool)
    for _ in range(n):
        i = int(np.argmin(np.where(done, np.inf, best)))
        if not np.isfinite(best[i]) or i == n - 1:
            break
        done[i] = True
        through = best[i] + dist[i]
        better = through < best
        best[better], previous[better] = through[better], i
    if not np.isfinite(best[-1]):
        return None
    path, i = [], n - 1
    while i != 0:
        path.append(nodes[i])
        i = int(previous[i])
    return path[::-1]


def _follow(
    state: PushState, waypoints: list[np.ndarray], tolerance: float = 12.0, arrive: float = 2.5
) -> _Route | None:
    """Drive the PD law through the waypoints (switching within `tolerance` pixels, ending
    within `arrive` of the last); None if the path touches the block or takes too long."""
    p, v = state.agent.astype(np.float64), state.velocity.astype(np.float64)
    targets = []
    start_clearance = float(clearance(p, state.block))
    for index, waypoint in enumerate(waypoints):
        last = index == len(waypoints) - 1
        while np.linalg.norm(p - waypoint) > (arrive if last else tolerance):
            if len(targets) >= 40:
                return None
            path, p, v = pd_path(p, v, waypoint)
            targets.append(waypoint)
            needed = (
                AGENT_RADIUS + 0.2 if len(targets) > 1 else min(AGENT_RADIUS, start_clearance) - 0.5
            )
            if clearance(path, state.block).min() < needed:
                return None
    if not targets:
        return _Route(np.zeros((0, 2)), p, v)
    return _Route(np.array(targets), p, v)
