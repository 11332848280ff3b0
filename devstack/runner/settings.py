"""Event source mapping settings Chalice cannot express (infra/event_sources.json), validated as Lambda's API would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.runner.retries import StreamRetryPolicy
from devstack.runner.verdicts import REPORT_BATCH_ITEM_FAILURES

# Resolved from this file, not the cwd, as devstack/provision.py finds the template.
DEFAULT_EVENT_SOURCES_PATH = Path(__file__).resolve().parents[2] / "infra" / "event_sources.json"
# Lambda's own API limits; a value outside them would fail the deployment, so it fails here first.
MAX_RETRY_ATTEMPTS_LIMIT = 10_000
RECORD_AGE_LIMITS_S = (60, 604_800)


# --- Event source mapping settings that Chalice cannot express (infra/event_sources.json) ---


class EventSourcesError(ValueError):
    """The event source settings say something Lambda's CreateEventSourceMapping would refuse."""


@dataclass(frozen=True)
class MappingSettings:
    """One handler's entry of infra/event_sources.json; the defaults are Lambda's when the entry is absent."""

    function_response_types: tuple[str, ...] = ()
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = -1  # -1: retry until the records expire (Lambda's default)
    maximum_record_age_in_seconds: int = -1  # -1: no age limit (Lambda's default)
    on_failure_destination_output: str | None = None  # a stack Output holding the destination queue's ARN

    @property
    def report_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    @property
    def stream_only_settings(self) -> list[str]:
        """The settings given that only stream (Kinesis, DynamoDB) mappings accept."""
        defaults = MappingSettings()
        names = [
            "bisect_batch_on_function_error",
            "maximum_retry_attempts",
            "maximum_record_age_in_seconds",
            "on_failure_destination_output",
        ]
        return [name for name in names if getattr(self, name) != getattr(defaults, name)]

    def retry_policy(self) -> StreamRetryPolicy:
        return StreamRetryPolicy(
            bisect_on_function_error=self.bisect_batch_on_function_error,
            maximum_retry_attempts=None if self.maximum_retry_attempts < 0 else self.maximum_retry_attempts,
            maximum_record_age_s=None if self.maximum_record_age_in_seconds < 0 else self.maximum_record_age_in_seconds,
        )

    @classmethod
    def from_json(cls, handler: str, raw: Any) -> MappingSettings:
        """Validate one entry the way Lambda's API would, so a mistake shows up locally, not at deployment."""
        if not isinstance(raw, dict):
            raise EventSourcesError(f"{handler}: expected an object, got {type(raw).__name__}")
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise EventSourcesError(f"{handler}: unknown settings {unknown} (known: {sorted(known)})")
        types = raw.get("function_response_types", [])
        if not isinstance(types, list) or any(value != REPORT_BATCH_ITEM_FAILURES for value in types):
            raise EventSourcesError(
                f"{handler}: function_response_types must be [] or [{REPORT_BATCH_ITEM_FAILURES!r}]"
            )
        bisect = raw.get("bisect_batch_on_function_error", False)
        if not isinstance(bisect, bool):
            raise EventSourcesError(f"{handler}: bisect_batch_on_function_error must be true or false")
        retries = _int_setting(handler, raw, "maximum_retry_attempts")
        if not -1 <= retries <= MAX_RETRY_ATTEMPTS_LIMIT:
            raise EventSourcesError(f"{handler}: maximum_retry_attempts must be -1..{MAX_RETRY_ATTEMPTS_LIMIT}")
        age = _int_setting(handler, raw, "maximum_record_age_in_seconds")
        if age != -1 and not RECORD_AGE_LIMITS_S[0] <= age <= RECORD_AGE_LIMITS_S[1]:
            low, high = RECORD_AGE_LIMITS_S
            raise EventSourcesError(f"{handler}: maximum_record_age_in_seconds must be -1 or {low}..{high}")
        output = raw.get("on_failure_destination_output")
        if output is not None and (not isinstance(output, str) or not output):
            raise EventSourcesError(f"{handler}: on_failure_destination_output must be a stack output name")
        return cls(tuple(types), bisect, retries, age, output)


def _int_setting(handler: str, raw: Mapping[str, Any], name: str) -> int:
    value = raw.get(name, -1)
    if isinstance(value, bool) or not isinstance(value, int):  # bool is an int subclass: true must not mean 1
        raise EventSourcesError(f"{handler}: {name} must be an integer")
    return value


def load_event_sources(path: Path | str) -> dict[str, MappingSettings]:
    """The settings file, keyed by Chalice handler name."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EventSourcesError(f"cannot read event source settings {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise EventSourcesError(f"{path}: expected an object keyed by handler name")
    return {str(handler): MappingSettings.from_json(str(handler), entry) for handler, entry in raw.items()}
