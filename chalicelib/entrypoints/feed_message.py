"""The execution-report message the feed bridge puts on the Kinesis stream, and its reading into the domain's report."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from chalicelib.domain.model import ExecType, ExecutionReport

DecimalText = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class ExecutionReportMessage(BaseModel):
    """An execution report as the feed bridge puts it on the stream (docs/execution-feed.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    seq: int = Field(ge=1)
    exec_id: str = Field(min_length=1, max_length=128)
    client_order_id: str = Field(min_length=1, max_length=64)
    exchange_order_id: str = Field(min_length=1, max_length=128)
    exec_type: ExecType
    last_qty: int = Field(ge=0)
    last_price: DecimalText | None = None
    cum_qty: int = Field(ge=0)
    leaves_qty: int = Field(ge=0)
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
