"""ORCA load reports: pure functions from a load snapshot to `endpoint-load-metrics` values.

The three forms are exactly what Envoy's parser (`source/common/orca/orca_parser.cc`) accepts:

- ``TEXT k=v,k=v``: only the keys Envoy knows, no duplicates, finite non-negative numbers, `=`
  as separator (Envoy <= 1.32 used `:`; every current release takes `=`);
- ``JSON {...}``: proto3 JSON of `xds.data.orca.v3.OrcaLoadReport`, snake_case field names;
- ``BIN <base64>``: the serialized message, padded standard base64 (older Envoys need padding).

Envoy's client-side weighted round robin computes a weight as
``rps_fractional / (application_utilization + eps / rps_fractional * penalty)`` and ignores a
report without a positive `rps_fractional` and utilization, which is why both are always sent.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import Decimal

HEADER = "endpoint-load-metrics"
FORMAT_REQUEST_HEADER = "endpoint-load-metrics-format"
FORMATS = ("TEXT", "JSON", "BIN")

# ORCA's top-level fields; everything else goes into named_metrics.
TOP_LEVEL = (
    "cpu_utilization",
    "mem_utilization",
    "application_utilization",
    "rps_fractional",
    "eps",
)


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """The server's load at one moment, in ORCA's terms (see the README for each field)."""

    application_utilization: float
    rps_fractional: float
    eps: float
    cpu_utilization: float
    mem_utilization: float
    num_requests_running: float
    num_requests_waiting: float
    num_tokens_running: float
    num_tokens_waiting: float
    kv_cache_usage_perc: float
    num_lora_adapters_running: float = 0.0
    num_lora_adapters_waiting: float = 0.0

    def fields(self) -> dict[str, float]:
        """Every value, made finite and non-negative (a bad value would void the whole report)."""
        return {name: _clean(getattr(self, name)) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(LoadSnapshot))
_INF = math.inf


def _clean(value: float) -> float:
    # `0 < value < inf` is False for NaN too: a cheaper test than math.isfinite and a compare.
    return value if 0 < value < _INF else 0.0


def _number(value: float) -> str:
    """The shortest decimal that reads back as exactly `value`, the double JSON and BIN carry
    (rounding would drop small rates to 0 and skew Envoy's weights), written without an
    exponent."""
    if value.__class__ is int and value < 10**15:  # counts: the common case, no float work
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    return format(Decimal(text), "f") if "e" in text else text


# TEXT's keys in their order (the top-level fields, then the named metrics), with their "=".
_TEXT_KEYS = tuple(
    (name, f"{name}=" if name in TOP_LEVEL else f"named_metrics.{name}=")
    for name in (*TOP_LEVEL, *(f for f in _FIELDS if f not in TOP_LEVEL))
)


def encode_text(snapshot: LoadSnapshot) -> str:
    # Encoded anew for most responses of a busy server (a new snapshot per engine step): one
    # pass, no intermediate dict.
    return "TEXT " + ",".join(
        [key + _number(_clean(getattr(snapshot, name))) for name, key in _TEXT_KEYS]
    )


def to_report(snapshot: LoadSnapshot):  # -> orca_load_report_pb2.OrcaLoadReport
    from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport

    values = snapshot.fields()
    return OrcaLoadReport(
        **{k: values[k] for k in TOP_LEVEL},
        named_metrics={k: v for k, v in values.items() if k not in TOP_LEVEL},
    )


def encode_json(snapshot: LoadSnapshot) -> str:
    from google.protobuf import json_format

    report = json_format.MessageToJson(
        to_report(snapshot), preserving_proto_field_name=True, indent=None
    )
    return "JSON " + report


def encode_bin(snapshot: LoadSnapshot) -> str:
    return "BIN " + base64.b64encode(to_report(snapshot).SerializeToString()).decode("ascii")


ENCODERS = {"TEXT": encode_text, "JSON": encode_json, "BIN": encode_bin}


def parse_formats(values: Iterable[str]) -> tuple[str, ...]:
    """`["text,json", "BIN"]` -> `("TEXT", "JSON", "BIN")`; raises ValueError naming a bad one."""
    out: list[str] = []
    for value in values:
        for item in value.replace(",", " ").split():
            name = item.upper()
            if name not in FORMATS:
                raise ValueError(f"invalid choice: {item!r} (choose from {', '.join(FORMATS)})")
            if name not in out:
                out.append(name)
    return tuple(out)


def choose_format(enabled: tuple[str, ...], requested: str | None) -> str:
    """The request's `endpoint-load-metrics-format` if enabled (any case), else the first
    enabled format: asking for a disabled format is not an error."""
    if requested:
        name = requested.strip().upper()
        if name in enabled:
            return name
    return enabled[0]
