"""The sweep spec: one TOML file that says which runs a sweep is made of.

Format
------
::

    name = "induction-plerixafor"      # optional, shown in reports
    base = "../default.toml"           # a config file, relative to this spec file ...
    # [base]                           # ... or a table of overrides on the embedded default:
    # "run.days" = 2                   #     dotted keys or nested tables, like a config file

    [set]                              # optional: overrides applied to every member
    "run.days" = 0.25                  # (the command line's --set comes after these)

    [vary]                             # every block present multiplies the design
    grid = { "cells.initial.lsc_count" = [4, 20], "cells.fate.lsc_self_renewal_probability" = [0.5, 0.6] }
    zip = { "a.b" = [1, 2, 3], "c.d" = [10, 20, 30] }     # parallel lists: 3 points
    lists = [                                            # explicit points; `name` labels one
      { name = "control" },
      { name = "7+3", "therapy.events" = [ ... ] },
    ]
    [vary.latin_hypercube]
    samples = 8
    seed = 7
    bounds = { "vessels.arteriole_loss_rate_per_day" = [0.01, 0.1] }
    log = ["vessels.arteriole_loss_rate_per_day"]      # optional: log-uniform keys

    [replicates]                       # the seeds every design point runs with
    seeds = [1, 2, 3]                  # or: count = 3, first_seed = 1
                                       # (no [replicates]: the base config's run.seed only)

    [branch]                           # optional: shared prefix per seed, forked into arms
    at_day = 14

    [experiment]                       # optional: paired comparison of named arms (by seed)
    control = "7+3"                    # a `name` of [vary] lists: the reference arm
    arms = ["7+3+CXCR4"]               # optional: the arms compared with it (default: all others)
    induction_start_day = 21           # relapse clock and nadir search start here
    end_of_induction_day = 28          # surviving LSCs are read on this day ...
    followup_days = 14                 # ... and this many days later
    columns = ["cxcl12_uM_mean"]       # optional: extra time-series readouts, by name

Keys are the dotted config keys of ``marrow3d run --set``; an unquoted dotted key in TOML
(``grid = { cells.initial.lsc_count = [4, 20] }``) is the same key. A table value is merged
key by key into the config, like a config file over the defaults.

Each block of ``[vary]`` gives a list of points (``grid``: the cartesian product of its
lists; ``zip``: the i-th elements of equally long lists; ``lists``: the points as written;
``latin_hypercube``: ``samples`` stratified draws, one per stratum of every key, reproducible
from ``seed``); the design is the cartesian product of the blocks present (a single empty
point when there is no ``[vary]``), and every design point runs once per replicate seed. A
key may appear in one block only.

With ``[branch]``, each seed's shared history is run once, to ``at_day`` (the run's final
checkpoint is at that time), and every design point is forked from it with ``branch_run``:
varied keys must then be branchable (:data:`marrow3d.runner.BRANCHABLE_PREFIXES`: therapy,
cells, vessels, transport.drugs, ...), which is checked when the spec is read.

``[experiment]`` names the arms of a paired comparison (:mod:`marrow3d.sweep.paired`,
``marrow3d sweep-report``): its arm names must be ``name`` labels of ``[vary] lists`` and its
days must be in order, which is checked when the spec is read; that the runs last until the
follow-up day is checked against ``run.days`` when the spec is expanded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config.loader import parse_toml_text, read_toml, validate_dict
from ..errors import ConfigError

__all__ = ["SweepSpec", "Vary", "LatinHypercube", "Replicates", "Branch", "Experiment", "load_spec", "flatten_keys", "LABEL_KEY"]

#: The key of a ``[vary] lists`` entry that names the point instead of setting a config value.
LABEL_KEY = "name"


class _Spec(BaseModel):
    # a key is written as its alias (``set``), and inf/nan are refused as in the config
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


def flatten_keys(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested tables into dotted keys: ``{"a": {"b": 1}, "c.d": 2}`` -> ``{"a.b": 1, "c.d": 2}``.

    Values that are not tables (numbers, strings, lists, lists of tables) stay as they are.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten_keys(value, full))
        else:
            if full in out:
                raise ValueError(f"key {full!r} is given twice")
            out[full] = value
    return out


def _check_key(key: str, where: str) -> str:
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise ValueError(f"{where}: {key!r} is not a dotted config key like 'cells.initial.lsc_count'")
    if len(parts) < 2:
        raise ValueError(
            f"{where}: {key!r} names a whole section; give a dotted key like '{key}.<name>'"
        )
    return key


def _flat_keys(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return value
    flat = flatten_keys(value)
    for k in flat:
        _check_key(k, where)
    return flat


class LatinHypercube(_Spec):
    """``[vary.latin_hypercube]``: stratified random points in a box of continuous keys."""

    samples: int = Field(..., ge=1, le=1_000_000, description="Number of points.")
    seed: int = Field(0, ge=0, lt=2**63, description="Seed of the design (the same seed gives the same points).")
    bounds: dict[str, tuple[float, float]] = Field(
        ..., min_length=1, description="Key -> [low, high]; each point draws one value per key in this range."
    )
    log: list[str] = Field(default_factory=list, description="Keys sampled uniformly in log space (low > 0).")

    @field_validator("bounds", mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # A [low, high] pair ends the nesting; tables nest further.
        return _flat_keys(value, "vary.latin_hypercube.bounds")

    @model_validator(mode="after")
    def _consistent(self) -> "LatinHypercube":
        for key, (lo, hi) in self.bounds.items():
            if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
                raise ValueError(f"bounds of {key!r} must be finite with low < high, got [{lo}, {hi}]")
        for key in self.log:
            if key not in self.bounds:
                raise ValueError(f"log lists {key!r}, which has no bounds")
            if self.bounds[key][0] <= 0:
                raise ValueError(f"log-uniform key {key!r} needs low > 0, got {self.bounds[key][0]}")
        return self


class Vary(_Spec):
    """``[vary]``: the design points (the product of the blocks given)."""

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="Cartesian product of these lists.")
    zip: dict[str, list[Any]] = Field(default_factory=dict, description="Equally long lists taken element-wise.")
    lists: list[dict[str, Any]] = Field(default_factory=list, description="Explicit points (`name` labels one).")
    latin_hypercube: LatinHypercube | None = Field(None, description="Latin hypercube sample of continuous keys.")

    @field_validator("grid", "zip", mode="before")
    @classmethod
    def _flatten_tables(cls, value: Any, info: Any) -> Any:
        return _flat_keys(value, f"vary.{info.field_name}")

    @field_validator("lists", mode="before")
    @classmethod
    def _flatten_points(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for i, point in enumerate(value):
            if not isinstance(point, dict):
                out.append(point)
                continue
            point = dict(point)
            label = point.pop(LABEL_KEY, None)
            flat = _flat_keys(point, f"vary.lists[{i}]")
            if label is not None:
                if not isinstance(label, str) or not label:
                    raise ValueError(f"vary.lists[{i}].name must be a non-empty string, got {label!r}")
                flat = {LABEL_KEY: label, **flat}
            out.append(flat)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> "Vary":
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"vary.grid: {key!r} has an empty list of values")
        if self.zip:
            lengths = {k: len(v) for k, v in self.zip.items()}
            if len(set(lengths.values())) != 1:
                shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
                raise ValueError(f"vary.zip lists must be equally long ({shown})")
            if not next(iter(lengths.values())):
                raise ValueError("vary.zip lists are empty")
        labels = [p[LABEL_KEY] for p in self.lists if LABEL_KEY in p]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"vary.lists: the name {dup[0]!r} is used twice")
        owner: dict[str, str] = {}
        blocks = [("grid", list(self.grid)), ("zip", list(self.zip)),
                  ("lists", sorted({k for p in self.lists for k in p if k != LABEL_KEY})),
                  ("latin_hypercube", list(self.latin_hypercube.bounds) if self.latin_hypercube else [])]
        for block, keys in blocks:
            for key in keys:
                if key in owner and owner[key] != block:
                    raise ValueError(f"{key!r} is varied in both vary.{owner[key]} and vary.{block}; use one block")
                owner[key] = block
        return self

    def keys(self) -> list[str]:
        """Every varied key, in the order the blocks give them."""
        seen: dict[str, None] = {}
        for key in [*self.grid, *self.zip, *(k for p in self.lists for k in p if k != LABEL_KEY),
                    *(self.latin_hypercube.bounds if self.latin_hypercube else [])]:
            seen.setdefault(key, None)
        return list(seen)


class Replicates(_Spec):
    """``[replicates]``: the seeds (``run.seed``) each design point runs with."""

    seeds: list[int] | None = Field(None, min_length=1, description="Explicit seeds.")
    count: int | None = Field(None, ge=1, le=100_000, description="Number of consecutive seeds ...")
    first_seed: int = Field(1, ge=0, description="... starting at this seed.")

    @model_validator(mode="after")
    def _one(self) -> "Replicates":
        if (self.seeds is None) == (self.count is None):
            raise ValueError("give either seeds = [...] or count = N (with first_seed)")
        if self.seeds is not None:
            if any(s < 0 for s in self.seeds):
                raise ValueError("seeds must be >= 0")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds {self.seeds} lists a seed twice")
        return self

    def seed_list(self) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return [self.first_seed + i for i in range(self.count)]  # type: ignore[arg-type]


class Branch(_Spec):
    """``[branch]``: run each seed's shared history once, to ``at_day``, then fork the arms."""

    at_day: float = Field(..., gt=0.0, description="Branch point, in days from the start of the run.")


class Experiment(_Spec):
    """``[experiment]``: a paired comparison of named arms against a control arm, by seed."""

    control: str = Field(..., min_length=1, description="The reference arm (a `name` of [vary] lists).")
    arms: list[str] | None = Field(None, min_length=1, description="Arms compared with it (default: all others).")
    induction_start_day: float = Field(
        ..., ge=0.0, description="Day induction starts: the burden nadir is sought and relapse timed from here [d]."
    )
    end_of_induction_day: float = Field(..., gt=0.0, description="Day surviving LSCs are first read [d].")
    followup_days: float = Field(14.0, gt=0.0, description="Second reading, this many days later [d].")
    columns: list[str] = Field(
        default_factory=list,
        description="Extra time-series columns read at both days (n/a while the runs lack them).",
    )

    @model_validator(mode="after")
    def _days(self) -> "Experiment":
        if not self.end_of_induction_day > self.induction_start_day:
            raise ValueError(f"end_of_induction_day ({self.end_of_induction_day:g}) must be after "
                             f"induction_start_day ({self.induction_start_day:g})")
        if self.arms is not None:
            if self.control in self.arms:
                raise ValueError(f"arms lists the control arm {self.control!r}")
            dup = sorted({a for a in self.arms if self.arms.count(a) > 1})
            if dup:
                raise ValueError(f"arms lists {dup[0]!r} twice")
        bad = [c for c in self.columns if not c or not c.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"columns: {bad[0]!r} is not a time-series column name (letters, digits, _)")
        return self

    @property
    def followup_day(self) -> float:
        """Day of the second reading [d]."""
        return self.end_of_induction_day + self.followup_days


class SweepSpec(_Spec):
    """A whole sweep spec (one TOML file); see the module docstring for the format."""

    name: str | None = Field(None, description="Name of the sweep (shown in reports).")
    base: str | dict[str, Any] | None = Field(
        None, description="Config file (relative to the spec) or a table of overrides on the default config."
    )
    set_: dict[str, Any] = Field(default_factory=dict, alias="set", description="Overrides applied to every member.")
    vary: Vary = Field(default_factory=Vary, description="The design points.")
    replicates: Replicates | None = Field(None, description="Seeds of every design point.")
    branch: Branch | None = Field(None, description="Shared prefix per seed and branched arms.")
    experiment: Experiment | None = Field(None, description="Paired comparison of named arms.")

    @field_validator("base", mode="before")
    @classmethod
    def _flatten_base(cls, value: Any) -> Any:
        return _flat_keys(value, "base")

    @field_validator("set_", mode="before")
    @classmethod
    def _flatten_set(cls, value: Any) -> Any:
        return _flat_keys(value, "set")

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSpec":
        varied = self.vary.keys()
        if self.replicates is not None and "run.seed" in varied:
            raise ValueError("run.seed is varied and also set by [replicates]; use one of them")
        if self.branch is not None and "run.seed" in varied:
            raise ValueError("a branching sweep takes its seeds from [replicates], not from [vary]")
        if self.experiment is not None:
            labels = [p[LABEL_KEY] for p in self.vary.lists if LABEL_KEY in p]
            known = ", ".join(repr(x) for x in labels) if labels else "none: name the points of [vary] lists"
            for where, name in [("control", self.experiment.control),
                                *(("arms", a) for a in (self.experiment.arms or []))]:
                if name not in labels:
                    raise ValueError(f"experiment.{where}: no arm is named {name!r} (arms: {known})")
            if len(labels) < 2:
                raise ValueError("experiment: a paired comparison needs at least two named arms in [vary] lists")
            other = [b for b in ("grid", "zip") if getattr(self.vary, b)] + \
                (["latin_hypercube"] if self.vary.latin_hypercube is not None else [])
            if other:
                raise ValueError(f"experiment: the arms must be the only design points, but vary.{other[0]} "
                                 "multiplies them (one member per arm and seed is compared)")
        return self


def load_spec(path: str | Path) -> tuple[SweepSpec, Path]:
    """Read and validate a sweep spec file.

    Returns
    -------
    (SweepSpec, Path)
        The spec and the folder it lives in (``base`` paths are relative to it).

    Raises
    ------
    ConfigError
        One line naming the key and the problem.
    """
    p = Path(path)
    data = read_toml(p)
    try:
        spec = validate_dict(SweepSpec, data, f"sweep spec {str(p)!r}")
    except ValueError as exc:  # a flattening problem raised before pydantic could wrap it
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"sweep spec {str(p)!r}: {exc}") from None
    return spec, p.resolve().parent  # type: ignore[return-value]


def spec_from_text(text: str, source: str = "sweep spec") -> SweepSpec:
    """Validate a spec given as TOML text (tests, notebooks); ``base`` paths are then relative to the cwd."""
    return validate_dict(SweepSpec, parse_toml_text(text, source), source)  # type: ignore[return-value]
