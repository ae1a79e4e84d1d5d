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
import functools
import json
import math
from collections.abc import Iterable
from decimal import Decimal
from operator import itemgetter
from typing import NamedTuple

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


class LoadSnapshot(NamedTuple):
    """The server's load at one moment, in ORCA's terms (see the README for each field).
    A tuple: immutable, and built at every engine step of a busy server (a frozen dataclass
    took about four times as long to construct)."""

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
        return dict(zip(_FIELDS, map(_clean, self), strict=True))


_FIELDS = LoadSnapshot._fields
_NAMED = tuple(f for f in _FIELDS if f not in TOP_LEVEL)
_INF = math.inf


def _clean(value: float) -> float:
    # `0 < value < inf` is False for NaN too: a cheaper test than math.isfinite and a compare.
    return value if 0 < value < _INF else 0.0


def _number(value: float) -> str:
    """The shortest decimal that reads back as exactly `value`, the double JSON and BIN carry
    (rounding would drop small rates to 0 and skew Envoy's weights), written without an
    exponent. `value` is finite and not negative (`_clean`)."""
    if value.__class__ is float:  # rates, utilizations: repr is the shortest round trip
        text = repr(value)
        if text.endswith(".0") and value < 1e15:  # integral ("N.0" below 1e16): as an int
            return text[:-2]
    elif value.__class__ is int and value < 10**15:  # counts
        return str(value)
    elif value == int(value) and value < 1e15:
        return str(int(value))
    else:
        text = repr(value)
    return format(Decimal(text), "f") if "e" in text else text


# TEXT's keys in their order (the top-level fields, then the named metrics), with their "=",
# and a getter of the snapshot's values in that order.
_TEXT_NAMES = (*TOP_LEVEL, *_NAMED)
_TEXT_KEYS = tuple(f"{n}=" if n in TOP_LEVEL else f"named_metrics.{n}=" for n in _TEXT_NAMES)
_text_values = itemgetter(*map(_FIELDS.index, _TEXT_NAMES))


def encode_text(snapshot: LoadSnapshot) -> str:
    # Encoded anew for most responses of a busy server (a new snapshot per engine step): one
    # pass, no intermediate dict; a value that is not finite and positive is 0 (`_clean`).
    return "TEXT " + ",".join(
        [
            key + (_number(value) if 0 < value < _INF else "0")
            for key, value in zip(_TEXT_KEYS, _text_values(snapshot), strict=True)
        ]
    )


@functools.cache
def _report_class():  # type: ignore[no-untyped-def]
    """`OrcaLoadReport`, imported on first use (not while the server starts)."""
    from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport

    return OrcaLoadReport


def to_report(snapshot: LoadSnapshot):  # -> orca_load_report_pb2.OrcaLoadReport
    """The snapshot as a new `OrcaLoadReport` (the gRPC stream's, and BIN's). A new message
    every time: in one kept and updated in place, protobuf (upb) replaces a map value by
    removing and re-inserting its entry, which may move it in the hash table and so change
    the order the map is written in (whether it does depends on the process's hash seed)."""
    values = snapshot.fields()
    return _report_class()(
        **{k: values[k] for k in TOP_LEVEL},
        named_metrics={k: values[k] for k in _NAMED},
    )


@functools.cache
def _json_layout() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The order `MessageToJson` writes a report in: its fields by number, the named metrics'
    map in the map's own order. That order follows from the keys, the order they are inserted
    in and the process's hash seed: the same for every message `to_report` builds here."""
    numbers = _report_class().DESCRIPTOR.fields_by_name
    fields = sorted((*TOP_LEVEL, "named_metrics"), key=lambda name: numbers[name].number)
    named = tuple(to_report(LoadSnapshot(*[0.0] * len(_FIELDS))).named_metrics)
    return tuple(fields), named


def encode_json(snapshot: LoadSnapshot) -> str:
    """`MessageToJson(to_report(snapshot), preserving_proto_field_name=True, indent=None)`,
    written without a message (in half the time): json_format hands each double to
    `json.dumps` as it is, and proto3 leaves out a field that is 0 (never a map entry).
    tests/server/test_orca.py holds the two byte-equal."""
    values = snapshot.fields()
    fields, named = _json_layout()
    report = {}
    for name in fields:
        if name == "named_metrics":
            report[name] = {key: float(values[key]) for key in named}
        elif values[name]:
            report[name] = float(values[name])
    return "JSON " + json.dumps(report)  # ASCII: json.dumps escapes the rest


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
