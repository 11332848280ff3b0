"""The execution-report message the feed bridge puts on the Kinesis stream, and its reading into the domain's report."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from chalicelib.domain.model import ExecType, ExecutionReport

# What a venue can print, generously: a number beyond these is malformed, not
# merely implausible. Without them Decimal("1e400") is finite and passes
# allow_inf_nan=False, and "1" followed by thousands of digits is read, kept
# and stored. Tighter, order-specific bounds are the domain's
# (chalicelib/domain/plausibility.py); these only keep absurd numbers out of
# everything after parsing.
MAX_DECIMAL_DIGITS = 30
MAX_DECIMAL_MAGNITUDE = 30  # |adjusted exponent|: 1e30 and 1e-30 still parse
# Quantities and seq: DynamoDB numbers hold 38 digits; a larger one would fail
# every write of its batch, which retrying cannot fix.
MAX_COUNT = 10**15


def _bounded(value: Decimal) -> Decimal:
    digits = value.as_tuple().digits
    if len(digits) > MAX_DECIMAL_DIGITS:
        raise ValueError(f"more than {MAX_DECIMAL_DIGITS} digits")
    if value and abs(value.adjusted()) > MAX_DECIMAL_MAGNITUDE:
        raise ValueError(f"exponent beyond +-{MAX_DECIMAL_MAGNITUDE}")
    return value


DecimalText = Annotated[Decimal, Field(ge=0, allow_inf_nan=False), AfterValidator(_bounded)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class ExecutionReportMessage(BaseModel):
    """An execution report as the feed bridge puts it on the stream (docs/execution-feed.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    seq: int = Field(ge=1, le=MAX_COUNT)
    exec_id: str = Field(min_length=1, max_length=128)
    client_order_id: str = Field(min_length=1, max_length=64)
    exchange_order_id: str = Field(min_length=1, max_length=128)
    exec_type: ExecType
    last_qty: Count
    last_price: DecimalText | None = None
    cum_qty: Count
    leaves_qty: Count
    avg_price: DecimalText | None = None
    transact_time: AwareDatetime


def parse_execution_report(data: bytes) -> ExecutionReport:
    """The domain report from a Kinesis record's data; ValueError saying what is wrong otherwise."""
    try:
        message = ExecutionReportMessage.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'report'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"malformed execution report: {problems}") from None
    return ExecutionReport(
        exec_id=message.exec_id,
        order_id=message.client_order_id,
        exchange_order_id=message.exchange_order_id,
        exec_type=message.exec_type,
        last_qty=message.last_qty,
        last_price=message.last_price,
        cum_qty=message.cum_qty,
        leaves_qty=message.leaves_qty,
        avg_price=message.avg_price,
        transact_time=message.transact_time,
        seq=message.seq,
    )
