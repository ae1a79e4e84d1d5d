"""An independent parser of `endpoint-load-metrics`, written from Envoy's rules
(`source/common/orca/orca_parser.cc` and its tests), to check what the server emits.

It deliberately shares no code with `vllm_server_ext.orca`. Rules:
- the value starts with `TEXT `, `JSON ` or `BIN ` (case-sensitive, one space);
- TEXT: comma-separated entries, whitespace around an entry ignored, empty entries dropped; each
  entry `key=value` split at the first `=`; keys: cpu_utilization, mem_utilization,
  application_utilization, eps, rps_fractional, named_metrics.<k>, utilization.<k> (non-empty k);
  values parsed as doubles, never NaN, infinite or negative; no key twice;
- JSON: proto3 JSON of OrcaLoadReport; unknown fields rejected;
- BIN: standard base64 (padded) of the serialized OrcaLoadReport.
"""

from __future__ import annotations

import base64
import binascii
import math

from google.protobuf import json_format
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport

STANDARD_KEYS = {
    "cpu_utilization",
    "mem_utilization",
    "application_utilization",
    "eps",
    "rps_fractional",
}


class OrcaParseError(ValueError):
    pass


def parse(value: str) -> OrcaLoadReport:
    if value.startswith("TEXT "):
        return _parse_text(value[len("TEXT ") :])
    if value.startswith("JSON "):
        report = OrcaLoadReport()
        try:
            json_format.Parse(value[len("JSON ") :], report, ignore_unknown_fields=False)
        except json_format.ParseError as e:
            raise OrcaParseError(f"invalid JSON: {e}") from None
        return report
    if value.startswith("BIN "):
        try:
            raw = base64.b64decode(value[len("BIN ") :], validate=True)
        except binascii.Error as e:
            raise OrcaParseError(f"unable to decode ORCA binary header value: {e}") from None
        return OrcaLoadReport.FromString(raw)
    raise OrcaParseError(f"unsupported ORCA header format: {value.split(' ')[0]}")


def _parse_text(body: str) -> OrcaLoadReport:
    report = OrcaLoadReport()
    seen: set[str] = set()
    for entry in (e.strip() for e in body.split(",")):
        if not entry:
            continue
        key, sep, raw = entry.partition("=")
        if not key:
            raise OrcaParseError("metric names cannot be empty strings")
        if not sep or not raw:
            raise OrcaParseError("metric values cannot be empty strings")
        try:
            number = float(raw)
        except ValueError:
            raise OrcaParseError(
                f"unable to parse custom backend load metric value({key})"
            ) from None
        if math.isnan(number):
            raise OrcaParseError(f"custom backend load metric value({key}) cannot be NaN.")
        if math.isinf(number):
            raise OrcaParseError(f"custom backend load metric value({key}) cannot be infinity.")
        if number < 0:
            raise OrcaParseError(f"custom backend load metric value({key}) cannot be negative.")
        if key in seen:
            raise OrcaParseError(f"endpoint-load-metrics contains duplicate metric: {key}")
        seen.add(key)
        if key in STANDARD_KEYS:
            setattr(report, key, number)
        elif key.startswith("named_metrics."):
            name = key[len("named_metrics.") :]
            if not name:
                raise OrcaParseError("named metric key is empty.")
            report.named_metrics[name] = number
        elif key.startswith("utilization."):
            name = key[len("utilization.") :]
            if not name:
                raise OrcaParseError("utilization metric key is empty.")
            report.utilization[name] = number
        else:
            raise OrcaParseError(f"unsupported metric name: {key}")
    return report


def weight(report: OrcaLoadReport, error_penalty: float = 1.0) -> float | None:
    """Envoy client-side weighted round robin's weight for this report, or None if ignored."""
    utilization = report.application_utilization or report.cpu_utilization
    qps = report.rps_fractional
    if qps <= 0:
        return None
    utilization += error_penalty * report.eps / qps
    return qps / utilization if utilization > 0 else None
