"""How each benchmark combination is measured, declared once: the ``slimline bench`` options take their defaults
and help from here, a recipe's ``benchmark:`` section extends it, and both reach :func:`bench_targets` through
:meth:`BenchSettings.kwargs`, where ``threads: auto`` is resolved."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BenchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1], min_length=1, description="batch sizes (each at least 1)"
    )
    threads: int | Literal["auto"] | None = Field(
        None, description="threads per runtime; unset or 'auto': the runtime's default"
    )
    min_runs: int = Field(20, ge=1, description="timed calls at least")
    min_seconds: float = Field(1.0, ge=0, description="timed seconds at least (0: min_runs alone)")
    max_seconds: float | None = Field(None, gt=0, description="stop timing a combination after this long regardless")
    warmup: int = Field(5, ge=0, description="untimed calls first")
    repeats: int = Field(
        1, ge=1, description="fresh processes per combination, in rounds over all of them; the median is kept"
    )
    timeout: float = Field(1800, gt=0, description="seconds allowed per combination")
    tuned_batch: bool = Field(True, description="also measure each artifact at the batch size `tune` chose")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be a whole number of at least 1, or 'auto' (the runtime's default), not {v!r}")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`slimline.bench.bench_targets` (``threads: auto`` -> the default)."""
        d = self.model_dump(exclude={"batch_sizes", "threads"} | (set(type(self).model_fields) - _MEASURING))
        return {"batch_sizes": list(self.batch_sizes), "threads": None if self.threads == "auto" else self.threads, **d}

    @classmethod
    def default(cls, name: str) -> Any:
        return cls.model_fields[name].get_default(call_default_factory=True)

    @classmethod
    def help(cls, name: str) -> str:
        return cls.model_fields[name].description or ""


_MEASURING = set(BenchSettings.model_fields)
