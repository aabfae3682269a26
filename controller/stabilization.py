"""Stabilization: how the policy moves from the current size toward a proposal.

Up at once; down only to the highest recommendation of a window; a small step up
soon after a step down lengthens the window for small steps (anti-flap), and the
extension decays once a scale-down has stuck. Pure functions over `History` and
`PolicyConfig`, used only by `controller.policy.desired_replicas`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # policy imports this module; the types are only annotations here
    from controller.policy import History, PolicyConfig


def flap_horizon(config: PolicyConfig) -> float:
    """How long after a scale-down a small scale-up still counts as a flap."""
    return 2 * config.window_seconds * (1 << config.flap_backoff_max)


def decayed_flap_level(history: History, config: PolicyConfig,
                       now: float) -> tuple[int, float | None]:
    """Relax one flap level once a scale-down has stuck for the flap horizon (a level
    above the config's maximum, e.g. after an edit lowered it, is capped)."""
    level = min(history.flap_level, config.flap_backoff_max)
    level_at = history.flap_level_at
    down_at = history.last_scale_down_at
    stuck = (down_at is not None and down_at == history.last_scale_at
             and (level_at is None or level_at < down_at)
             and now - down_at >= flap_horizon(config))
    return (level - 1, now) if level > 0 and stuck else (level, level_at)


def flap_escalation(history: History, config: PolicyConfig, current: int, desired: int,
                    now: float, level: int, level_at: float | None,
                    ) -> tuple[int, float | None]:
    """A small step up soon after a step down: we gave back capacity we needed.

    Jump to a window that would have covered the gap between the two moves (at
    least one level up), so noise cannot walk the pool up and down repeatedly."""
    down_at = history.last_scale_down_at
    if not (1 <= current < desired <= current + small_step(current, config)
            and down_at is not None and now - down_at < flap_horizon(config)
            and level < config.flap_backoff_max and config.window_seconds > 0):
        return level, level_at
    # Bounded before the log: a tiny window makes the ratio overflow to inf.
    ratio = min(max(2 * (now - down_at) / config.window_seconds, 1.0), 2.0 ** 64)
    gap_levels = math.ceil(math.log2(ratio))
    return min(config.flap_backoff_max, max(level + 1, gap_levels)), now


def in_window(recs: tuple[tuple[float, int], ...], now: float,
              window: float) -> tuple[tuple[float, int], ...]:
    return tuple((t, r) for t, r in recs if now - t < window)


def small_step(current: int, config: PolicyConfig) -> int:
    """The size of move that noise around a steady load produces (>= 1 replica)."""
    return max(1, math.ceil(current * 2 * config.tolerance))


def step_toward(proposal: int, current: int, recs: tuple[tuple[float, int], ...],
                config: PolicyConfig, details: dict[str, float | int | str], *,
                base_cutoff: float) -> tuple[int, str]:
    """Move from current toward the proposal: up at once, down only when stable.

    A large drop uses the base window; a small one (the kind noise makes) must also
    hold over the flap-extended window, so flapping stops without slowing scale-in."""
    if proposal > current:
        if config.max_step_up is not None and proposal - current > config.max_step_up:
            details["step_limited"] = proposal
            return current + config.max_step_up, f"scale-up:{details['cause']}"
        return proposal, f"scale-up:{details['cause']}"
    if proposal == current:
        if details["cause"] == "below-activation":
            return current, "hold:below-activation"
        return current, "hold:tolerance" if details.get("within_tolerance") else "hold:steady"
    stabilized = max((r for t, r in recs if t > base_cutoff), default=proposal)
    if stabilized < current and current - stabilized <= small_step(current, config):
        stabilized = max(r for _, r in recs)
    details["stabilized"] = stabilized
    if stabilized >= current:
        return current, "hold:stabilizing"
    target = stabilized
    if config.scale_down_step is not None and current - target > config.scale_down_step:
        target = current - config.scale_down_step
        details["step_limited"] = stabilized
    return target, "scale-down:stabilized"
