"""Dynamic-programming solution of Nav1D on a step-aligned state grid.

The grid is chosen so that every window ``[x - gamma, x + gamma]`` around a grid point ``x``
starts and ends on grid points (or is clipped at +-1, which are grid points too). The
Bellman maximum over the reachable window then becomes an index-aligned sliding-window maximum,
and policy evaluation of the uniform random policy an index-aligned weighted window sum.

Grid construction: the spacing is ``h = gamma / grid_per_step``. If ``2 / h`` is an integer
``n`` (up to 1e-9 relative rounding), the grid is the ``n + 1`` equispaced points from -1 to 1.
Otherwise the lattice anchored at -1 (``-1 + m h``) misses +1 and the lattice anchored at +1
(``1 - m h``) misses -1, so the grid is their union: both lattices are invariant under shifts by
``gamma = grid_per_step * h``, the union contains both ends, and sorted it alternates between
the two lattices, so a window of ``gamma`` is still exactly ``2 * grid_per_step`` indices wide.
The spacing then alternates between ``r`` and ``h - r`` with ``r = 2 - n h``.

References:
    Bellman, "Dynamic Programming" (1957): backward induction ``V_t = max(r_t + V_{t+1})``.
    "Maximize Your Diffusion", §4.1 (Nav1D optimum used for normalised scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from dmc_envs.nav1d.task import Nav1DTask

__all__ = ["Nav1DSolution", "solve"]

_REL_TOL = 1e-9
# Rows per batch in optimal_action, bounding the (rows, candidates) temporaries to ~tens of MB.
_ACTION_CHUNK = 16384


def _step_grid(step_size: float, grid_per_step: int) -> tuple[NDArray[np.float64], int, NDArray]:
    """Build the step-aligned grid (see the module docstring) and its window geometry.

    Returns:
        ``(grid, half_window, extended)``: the grid on ``[-1, 1]``; the number of grid indices
        spanning ``gamma``; and the grid continued by ``half_window`` virtual points on each side
        (same lattice pattern), which gives the trapezoid weights of clipped windows.

    Shapes:
        grid: ``(N,)``; extended: ``(N + 2 * half_window,)``.
    """
    h = step_size / grid_per_step
    n = int(np.floor(2.0 / h + _REL_TOL))
    r = 2.0 - n * h
    m = np.arange(-grid_per_step, n + grid_per_step + 1, dtype=np.float64)
    if abs(r) <= _REL_TOL * h:
        extended = -1.0 + h * m
        extended[grid_per_step : grid_per_step + n + 1] = np.linspace(-1.0, 1.0, n + 1)
        half = grid_per_step
        grid = extended[half : half + n + 1].copy()
    else:
        extended = np.empty(2 * m.size)
        extended[0::2] = -1.0 + h * m  # lattice through -1
        extended[1::2] = 1.0 - h * (n - m)  # lattice through +1, offset r above the first
        half = 2 * grid_per_step
        grid = extended[half : half + 2 * (n + 1)].copy()
    return grid, half, extended


def _uniform_average(grid: NDArray, values: NDArray, low: float, high: float) -> float:
    """Average of the linear interpolant of ``values`` over ``[low, high]`` (trapezoid rule)."""
    if not -1.0 <= low <= high <= 1.0:
        raise ValueError(f"need -1 <= start_low <= start_high <= 1, got [{low}, {high}]")
    if low == high:
        return float(np.interp(low, grid, values))
    inner = grid[(grid > low) & (grid < high)]
    xs = np.concatenate([[low], inner, [high]])
    ys = np.interp(xs, grid, values)
    return float(0.5 * np.sum((ys[1:] + ys[:-1]) * np.diff(xs)) / (high - low))


@dataclass(frozen=True, eq=False)
class Nav1DSolution:
    """Optimal and uniform-random value tables of a Nav1D task on a step-aligned grid.

    Attributes:
        task: The solved task.
        grid_per_step: Grid points per ``step_size`` (the spacing is ``step_size / that``).
        grid: Increasing grid on ``[-1, 1]`` including both ends.
        values: Optimal values ``V_t`` on the grid for ``t = 0..H`` (``V_H = 0``).
        random_values: Values of the uniform random policy on the grid.
        half_window: Number of grid indices spanning one ``step_size``.

    Shapes:
        grid: ``(N,)``; values, random_values: ``(H + 1, N)``.
    """

    task: Nav1DTask
    grid_per_step: int
    grid: NDArray[np.float64]
    values: NDArray[np.float64]
    random_values: NDArray[np.float64]
    half_window: int

    def _check_t(self, t: int, last: int) -> int:
        """Validate a time index against ``0..last``."""
        if not 0 <= int(t) <= last:
            raise ValueError(f"t must be in [0, {last}], got {t!r}")
        return int(t)

    def optimal_value(self, s: ArrayLike, t: int = 0) -> NDArray[np.float64]:
        """Optimal value-to-go ``V_t(s)``, linearly interpolated between grid points.

        Shapes:
            s: any; returns the same shape.
        """
        t = self._check_t(t, self.task.horizon)
        return np.interp(np.asarray(s, dtype=np.float64), self.grid, self.values[t])

    def optimal_return(self, start_low: float = -1.0, start_high: float = 1.0) -> float:
        """Expected optimal return for a start uniform on ``[start_low, start_high]``."""
        return _uniform_average(self.grid, self.values[0], start_low, start_high)

    def random_return(self, start_low: float = -1.0, start_high: float = 1.0) -> float:
        """Expected return of ``a ~ U[-1, 1]`` for a start uniform on the given interval."""
        return _uniform_average(self.grid, self.random_values[0], start_low, start_high)

    def normalized_score(self, returns: ArrayLike) -> NDArray[np.float64] | float:
        """Map returns to ``100 * (R - R_random) / (R_opt - R_random)`` (default starts).

        Returns:
            A float for scalar input, else an array of the input's shape.
        """
        best, rand = self.optimal_return(), self.random_return()
        if not best > rand:
            raise RuntimeError(f"degenerate task: optimal {best} <= random {rand}")
        scores = 100.0 * (np.asarray(returns, dtype=np.float64) - rand) / (best - rand)
        return scores if scores.ndim else float(scores)

    def optimal_action(self, s: ArrayLike, t: int) -> NDArray[np.float64]:
        """Greedy action w.r.t. ``r_t + V_{t+1}`` over the reachable window of each state.

        Candidates are the grid points inside ``[s - gamma, s + gamma] ∩ [-1, 1]`` plus the
        window's two (clipped) ends, with ``V_{t+1}`` interpolated; on grid states this
        reproduces the DP maximiser exactly, off the grid it never misses the window's ends.

        Shapes:
            s: any; returns the same shape, actions in ``[-1, 1]``.
        """
        t = self._check_t(t, self.task.horizon - 1)
        states = np.asarray(s, dtype=np.float64)
        flat = states.reshape(-1)
        out = np.empty_like(flat)
        for begin in range(0, flat.size, _ACTION_CHUNK):
            chunk = flat[begin : begin + _ACTION_CHUNK]
            out[begin : begin + chunk.size] = self._greedy_chunk(chunk, t)
        return out.reshape(states.shape)

    def _greedy_chunk(self, s: NDArray[np.float64], t: int) -> NDArray[np.float64]:
        """:meth:`optimal_action` for a 1-D batch.

        Shapes:
            s: ``(B,)``; returns ``(B,)``.
        """
        gamma, grid = self.task.step_size, self.grid
        eps = _REL_TOL * gamma
        low = np.maximum(s - gamma, -1.0)
        high = np.minimum(s + gamma, 1.0)
        # A closed window of width 2 * gamma holds at most 2 * half_window + 1 grid points;
        # one more absorbs rounding at the ends, and the mask drops whatever lies outside.
        first = np.searchsorted(grid, low - eps, side="left")
        idx = first[:, None] + np.arange(2 * self.half_window + 2)
        inside = idx < grid.size
        points = grid[np.minimum(idx, grid.size - 1)]
        inside &= points <= high[:, None] + eps
        cands = np.concatenate([points, low[:, None], high[:, None]], axis=1)
        keep = np.concatenate([inside, np.ones((s.size, 2), dtype=bool)], axis=1)
        q = self.task.reward(t, cands) + np.interp(cands, grid, self.values[t + 1])
        q = np.where(keep, q, -np.inf)
        target = cands[np.arange(s.size), np.argmax(q, axis=1)]
        return np.clip((target - s) / gamma, -1.0, 1.0)


def _random_window_weights(extended: NDArray, half: int, step_size: float) -> NDArray:
    """Trapezoid weights of ``E[f(s')]`` with ``s'`` uniform on ``[x - gamma, x + gamma]``.

    Applied to ``f`` edge-padded by ``half`` values, the virtual points beyond +-1 carry the
    clipped probability mass onto ``f(+-1)``, exactly as ``clip`` collapses it.

    Shapes:
        extended: ``(N + 2 * half,)``; returns ``(N, 2 * half + 1)``, rows summing to 1.
    """
    xs = sliding_window_view(extended, 2 * half + 1)
    gaps = np.diff(xs, axis=1)
    weights = np.zeros_like(xs)
    weights[:, :-1] += 0.5 * gaps
    weights[:, 1:] += 0.5 * gaps
    return weights / (2.0 * step_size)


def solve(task: Nav1DTask, grid_per_step: int = 40) -> Nav1DSolution:
    """Solve ``task`` by backward induction on a step-aligned grid.

    ``V_H = 0`` and ``V_t(x) = max_{x'} [r_t(x') + V_{t+1}(x')]`` over grid points ``x'`` in
    ``[x - gamma, x + gamma] ∩ [-1, 1]``; the uniform random policy is evaluated on the same
    grid with the linear interpolant of the integrand.

    Args:
        task: The task to solve.
        grid_per_step: Grid points per ``step_size``; the error of the optimum shrinks as
            ``O((step_size / grid_per_step) ** 2)``.

    Returns:
        The solution.

    Raises:
        ValueError: If ``grid_per_step`` is not an integer >= 1.
    """
    if isinstance(grid_per_step, bool) or not isinstance(grid_per_step, int | np.integer):
        raise ValueError(f"grid_per_step must be an integer >= 1, got {grid_per_step!r}")
    if grid_per_step < 1:
        raise ValueError(f"grid_per_step must be an integer >= 1, got {grid_per_step!r}")
    grid, half, extended = _step_grid(task.step_size, int(grid_per_step))
    weights = _random_window_weights(extended, half, task.step_size)
    horizon = task.horizon
    values = np.zeros((horizon + 1, grid.size))
    random_values = np.zeros((horizon + 1, grid.size))
    width = 2 * half + 1
    for t in range(horizon - 1, -1, -1):
        reward = task.reward(t, grid)
        # -inf padding: indices beyond the ends are positions outside [-1, 1], never reachable.
        best = np.pad(reward + values[t + 1], half, constant_values=-np.inf)
        values[t] = sliding_window_view(best, width).max(axis=1)
        mean = np.pad(reward + random_values[t + 1], half, mode="edge")
        random_values[t] = np.sum(sliding_window_view(mean, width) * weights, axis=1)
    for table in (grid, values, random_values):
        table.setflags(write=False)
    return Nav1DSolution(task, int(grid_per_step), grid, values, random_values, half)
