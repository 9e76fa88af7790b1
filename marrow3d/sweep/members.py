"""Expand a sweep spec into members: one fully resolved, validated config per run.

A *member* is a plain dict (it travels to worker processes and into ``sweep.json``):

``member_id``
    ``p<point>_s<seed>``, e.g. ``p003_s2`` (stable for a given spec).
``kind``
    ``"run"`` (a run from t = 0), ``"arm"`` (forked from a shared prefix) or ``"prefix"``
    (the shared history of one seed in a branching sweep; not a row of the summary).
``point``, ``label``, ``seed``, ``params``
    Design-point index, its ``name`` from ``[vary] lists`` (joined with ``/`` when several),
    the run seed and the varied values (dotted key -> value).
``overrides``
    The ``section.key=value`` strings that turn the base config into this member.
``config_toml``, ``fingerprint``
    The resolved config (what the worker runs) and a hash of it that ignores
    ``run.threads`` (results do not depend on it), used to recognise finished members.
``error``
    None, or the one-line reason why the member's config is invalid: such a member is
    recorded as failed without running, and the rest of the sweep goes on.
``prefix_id``, ``branch_overrides``, ``at_day``
    Arms only: the prefix they fork from and the overrides ``branch_run`` applies to it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import SimulationConfig
from ..config.loader import apply_overrides, default_config_text, read_toml, validate_dict
from ..errors import ConfigError
from .spec import LABEL_KEY, SweepSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Plan", "expand", "toml_literal", "override", "latin_hypercube", "fingerprint", "is_branchable"]


# ------------------------------------------------------------------------------ TOML values


def _toml_string(s: str) -> str:
    # JSON escapes (\" \\ \n \t \uXXXX ...) are TOML basic-string escapes too; DEL must be escaped.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007F")


def toml_literal(value: Any) -> str:
    """``value`` as a one-line TOML literal (inline tables for dicts) that reads back equal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(str(k))} = {toml_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    raise TypeError(f"{value!r} ({type(value).__name__}) has no TOML form")


def override(key: str, value: Any) -> str:
    """The ``key=value`` override string of ``marrow3d run --set`` for a Python value."""
    return f"{key}={toml_literal(value)}"


# ------------------------------------------------------------------------------ designs


def latin_hypercube(bounds: dict[str, tuple[float, float]], samples: int, seed: int,
                    log: list[str] | tuple[str, ...] = ()) -> list[dict[str, float]]:
    """``samples`` points with exactly one point in each of the ``samples`` strata of every key.

    Each key's range is cut into ``samples`` equal strata (equal in log space for keys in
    ``log``); a random permutation assigns strata to points and a uniform draw places the
    point inside its stratum. ``numpy.random.Generator(PCG64(seed))``: the same arguments give
    the same points on every machine.
    """
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(seed))
    cols: dict[str, np.ndarray] = {}
    for key, (lo, hi) in bounds.items():
        u = (rng.permutation(samples) + rng.random(samples)) / samples
        if key in log:
            cols[key] = np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            cols[key] = lo + u * (hi - lo)
    return [{k: float(v[i]) for k, v in cols.items()} for i in range(samples)]


def _design(spec: SweepSpec) -> list[tuple[str | None, dict[str, Any]]]:
    """The design points (label, {key: value}): the product of the blocks of ``[vary]``."""
    vary = spec.vary
    blocks: list[list[tuple[str | None, dict[str, Any]]]] = []
    if vary.grid:
        keys = list(vary.grid)
        blocks.append([(None, dict(zip(keys, combo))) for combo in itertools.product(*vary.grid.values())])
    if vary.zip:
        keys = list(vary.zip)
        blocks.append([(None, dict(zip(keys, vals))) for vals in zip(*vary.zip.values())])
    if vary.lists:
        blocks.append([(p.get(LABEL_KEY), {k: v for k, v in p.items() if k != LABEL_KEY}) for p in vary.lists])
    if vary.latin_hypercube is not None:
        lhs = vary.latin_hypercube
        blocks.append([(None, p) for p in latin_hypercube(lhs.bounds, lhs.samples, lhs.seed, lhs.log)])
    points: list[tuple[str | None, dict[str, Any]]] = [(None, {})]
    for block in blocks:
        nxt = []
        for (la, pa), (lb, pb) in itertools.product(points, block):
            labels = [x for x in (la, lb) if x]
            nxt.append(("/".join(labels) if labels else None, {**pa, **pb}))
        points = nxt
    return points


# ------------------------------------------------------------------------------ helpers


def is_branchable(key: str) -> bool:
    """Whether ``branch_run`` may change the dotted config key ``key``."""
    from ..runner import BRANCHABLE_PREFIXES

    return any(key == p or key.startswith(p + ".") for p in BRANCHABLE_PREFIXES)


def fingerprint(cfg: SimulationConfig, extra: str = "") -> str:
    """A hash of the resolved config that ignores ``run.threads`` (results do not depend on it)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    data.get("run", {}).pop("threads", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":")) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _base_data(spec: SweepSpec, spec_dir: Path) -> tuple[dict[str, Any], str]:
    if isinstance(spec.base, str):
        path = Path(spec.base)
        if not path.is_absolute():
            path = spec_dir / path
        return read_toml(path), str(path)
    data = tomllib.loads(default_config_text())
    if isinstance(spec.base, dict):
        data = apply_overrides(data, [override(k, v) for k, v in spec.base.items()])
        return data, "default config with [base] overrides"
    return data, "default config"


@dataclass
class Plan:
    """The expanded sweep: members (rows of the summary) and, when branching, the prefixes."""

    members: list[dict[str, Any]]
    prefixes: list[dict[str, Any]] = field(default_factory=list)
    varied_keys: list[str] = field(default_factory=list)
    base_source: str = ""
    name: str | None = None
    at_day: float | None = None
    experiment: dict[str, Any] | None = None

    @property
    def units(self) -> list[dict[str, Any]]:
        """Everything that runs: prefixes first, then members."""
        return [*self.prefixes, *self.members]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_source": self.base_source,
            "varied_keys": self.varied_keys,
            "at_day": self.at_day,
            "experiment": self.experiment,
            "prefixes": self.prefixes,
            "members": self.members,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        return cls(members=data["members"], prefixes=data.get("prefixes", []),
                   varied_keys=data.get("varied_keys", []), base_source=data.get("base_source", ""),
                   name=data.get("name"), at_day=data.get("at_day"), experiment=data.get("experiment"))


def expand(spec: SweepSpec, spec_dir: str | Path | None = None, *, extra_overrides: list[str] | tuple[str, ...] = (),
           threads: int | None = None, default_threads: int | None = None) -> Plan:
    """Expand ``spec`` into validated members (and the shared prefixes of a branching sweep).

    Parameters
    ----------
    spec : SweepSpec
    spec_dir : Path, optional
        Folder the spec's ``base`` path is relative to (default: the working directory).
    extra_overrides : sequence of str
        ``section.key=value`` overrides applied to every member after the spec's ``[set]``
        (the command line's ``--set``).
    threads : int, optional
        ``run.threads`` of every member (CPU threads; results do not depend on it).
    default_threads : int, optional
        ``run.threads`` of every member when neither ``threads`` nor the base config (with
        ``[set]``) gives one (a local cluster passes ``cores // workers``).

    Returns
    -------
    Plan

    Raises
    ------
    ConfigError
        A problem shared by all members: unreadable base config, invalid ``[set]`` or
        ``--set``, non-branchable keys in a branching sweep. A member whose own values are
        invalid does not raise: it carries its ``error`` and is recorded as failed.
    """
    spec_dir = Path(spec_dir) if spec_dir is not None else Path.cwd()
    base, source = _base_data(spec, spec_dir)
    common = [override(k, v) for k, v in spec.set_.items()] + list(extra_overrides)
    if threads is not None:
        common.append(f"run.threads={int(threads)}")
    base_cfg = validate_dict(SimulationConfig, apply_overrides(base, common), f"sweep base ({source} with [set])")
    if threads is None and default_threads is not None and base_cfg.run.threads is None:  # type: ignore[attr-defined]
        common.append(f"run.threads={int(default_threads)}")
        base_cfg = validate_dict(SimulationConfig, apply_overrides(base, common), f"sweep base ({source} with [set])")
    varied = spec.vary.keys()
    seeds: list[int | None] = spec.replicates.seed_list() if spec.replicates is not None else [None]

    at_day = spec.branch.at_day if spec.branch is not None else None
    if at_day is not None:
        bad = [k for k in varied if not is_branchable(k)]
        if bad:
            from ..runner import BRANCHABLE_PREFIXES

            raise ConfigError(
                f"a branching sweep may vary only branchable keys; {', '.join(bad)} "
                f"{'defines' if len(bad) == 1 else 'define'} the shared history "
                f"(branchable: {', '.join(BRANCHABLE_PREFIXES)})"
            )
        if seeds == [None]:
            seeds = [base_cfg.run.seed]
        step_h = base_cfg.run.cell_step_hours
        steps = at_day * 24.0 / step_h
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise ConfigError(
                f"branch.at_day = {at_day:g} ({at_day * 24:g} h) is not a whole number of cell steps "
                f"(run.cell_step_hours = {step_h:g})"
            )

    experiment = spec.experiment.model_dump(mode="json") if spec.experiment is not None else None
    if spec.experiment is not None and base_cfg.run.days < spec.experiment.followup_day - 1e-9:  # type: ignore[attr-defined]
        raise ConfigError(
            f"experiment: the follow-up day {spec.experiment.followup_day:g} (end_of_induction_day + followup_days) "
            f"is after the end of the runs (run.days = {base_cfg.run.days:g})"  # type: ignore[attr-defined]
        )

    points = _design(spec)
    width = max(3, len(str(len(points) - 1)))
    prefixes: dict[int, dict[str, Any]] = {}
    prefix_cfgs: dict[int, SimulationConfig] = {}
    if at_day is not None:
        for s in seeds:
            assert s is not None
            ov = [*common, f"run.seed={s}", f"run.days={float(at_day)!r}"]
            cfg = validate_dict(SimulationConfig, apply_overrides(base, ov), f"shared prefix of seed {s}")
            prefix_cfgs[s] = cfg  # type: ignore[assignment]
            prefixes[s] = {
                "member_id": f"prefix_s{s}", "kind": "prefix", "point": None, "label": None, "seed": s,
                "params": {}, "overrides": ov, "config_toml": cfg.to_toml(), "fingerprint": fingerprint(cfg),
                "error": None, "at_day": float(at_day),
            }

    members: list[dict[str, Any]] = []
    for i, (label, params) in enumerate(points):
        point_ov = [override(k, v) for k, v in params.items()]
        for s in seeds:
            ov = list(point_ov) + ([f"run.seed={s}"] if s is not None else [])
            seed_for_id = s if s is not None else params.get("run.seed", base_cfg.run.seed)
            member_id = f"p{i:0{width}d}_s{seed_for_id}"
            member: dict[str, Any] = {
                "member_id": member_id, "kind": "run", "point": i, "label": label, "seed": seed_for_id,
                "params": params, "overrides": [*common, *ov], "config_toml": None, "fingerprint": None,
                "error": None,
            }
            try:
                cfg = validate_dict(SimulationConfig, apply_overrides(base, [*common, *ov]), f"member {member_id}")
                member["seed"] = cfg.run.seed  # type: ignore[attr-defined]
                member["config_toml"] = cfg.to_toml()  # type: ignore[attr-defined]
                member["fingerprint"] = fingerprint(cfg)  # type: ignore[arg-type]
                if at_day is not None:
                    _make_arm(member, cfg, prefixes[s], prefix_cfgs[s], point_ov, float(at_day))  # type: ignore[index]
            except ConfigError as exc:
                member["error"] = str(exc)
            members.append(member)
    return Plan(members=members, prefixes=list(prefixes.values()), varied_keys=varied, base_source=source,
                name=spec.name, at_day=at_day, experiment=experiment)


def _make_arm(member: dict[str, Any], cfg: SimulationConfig, prefix: dict[str, Any], prefix_cfg: SimulationConfig,
              point_ov: list[str], at_day: float) -> None:
    """Turn ``member`` into an arm forked from ``prefix`` at ``at_day`` (ConfigError if it cannot be)."""
    from ..runner import _check_future_doses, changed_keys

    mid = member["member_id"]
    if not cfg.run.days > at_day:
        raise ConfigError(f"member {mid}: run.days = {cfg.run.days:g} must be after branch.at_day = {at_day:g}")
    branch_ov = [*point_ov, f"run.days={float(cfg.run.days)!r}"]
    # What branch_run will build from the prefix's checkpoint must be this member's config.
    arm = validate_dict(SimulationConfig, apply_overrides(prefix_cfg.model_dump(mode="json", exclude_none=True),
                                                          branch_ov), f"member {mid}")
    if arm.model_dump(mode="json") != cfg.model_dump(mode="json"):  # pragma: no cover - a bug, not user input
        diff = changed_keys(arm, cfg)  # type: ignore[arg-type]
        raise ConfigError(f"member {mid}: the branched config differs from the member's in {', '.join(diff)}")
    bad = [k for k in changed_keys(prefix_cfg, cfg) if not is_branchable(k)]
    if bad:
        raise ConfigError(f"member {mid}: a branch may not change {', '.join(bad)}")
    try:
        _check_future_doses(prefix_cfg, cfg, at_day * 24.0)
    except ConfigError as exc:
        raise ConfigError(f"member {mid}: {exc}") from None
    member.update(
        kind="arm",
        prefix_id=prefix["member_id"],
        prefix_fingerprint=prefix["fingerprint"],
        branch_overrides=branch_ov,
        at_day=at_day,
        fingerprint=fingerprint(cfg, extra="|prefix:" + prefix["fingerprint"]),
    )
