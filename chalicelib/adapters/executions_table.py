"""Execution reports in DynamoDB, one item per exec_id under its order."""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import DynamoDBTable, decimal_or_none, table_meta, text_or_none
from chalicelib.adapters.repository import ExecutionCursor, ExecutionPage, StorageUnavailable, execution_page
from chalicelib.domain.model import ExecType, ExecutionReport


class ExecutionRecord(Model):
    class Meta:
        table_name = "executions"  # replaced per table by execution_record_class_for()

    order_id = UnicodeAttribute(hash_key=True)
    exec_id = UnicodeAttribute(range_key=True)
    exchange_order_id = UnicodeAttribute()
    exec_type = UnicodeAttribute()
    last_qty = NumberAttribute()
    last_price = UnicodeAttribute(null=True)  # decimal strings: exact, unlike PynamoDB's float numbers
    cum_qty = NumberAttribute()
    leaves_qty = NumberAttribute()
    avg_price = UnicodeAttribute(null=True)
    transact_time = UTCDateTimeAttribute()
    seq = NumberAttribute()


def execution_record_class_for(table_name: str, **connection: Any) -> type[ExecutionRecord]:
    """An ExecutionRecord bound to one table (connection: see table_meta)."""
    return type("BoundExecutionRecord", (ExecutionRecord,), {"Meta": table_meta(table_name, **connection)})


class DynamoDBExecutionRepository(DynamoDBTable[ExecutionRecord]):
    def add_many(self, reports: list[ExecutionReport]) -> None:
        # BatchWriteItem: 25 puts per call, unprocessed items retried by
        # PynamoDB. A put of an exec_id already stored rewrites the same
        # values, so a redelivered batch is harmless without any condition.
        try:
            with self._records.batch_write() as batch:
                for report in reports:
                    batch.save(
                        self._records(
                            report.order_id,
                            report.exec_id,
                            exchange_order_id=report.exchange_order_id,
                            exec_type=report.exec_type.value,
                            last_qty=report.last_qty,
                            last_price=text_or_none(report.last_price),
                            cum_qty=report.cum_qty,
                            leaves_qty=report.leaves_qty,
                            avg_price=text_or_none(report.avg_price),
                            transact_time=report.transact_time,
                            seq=report.seq,
                        )
                    )
        except PynamoDBException as exc:
            raise StorageUnavailable("could not store executions") from exc

    def list_for_order(self, order_id: str) -> list[ExecutionReport]:
        try:
            records = list(self._records.query(order_id, consistent_read=True))
        except PynamoDBException as exc:
            raise StorageUnavailable(f"could not read executions of {order_id}") from exc
        reports = [
            ExecutionReport(
                exec_id=r.exec_id,
                order_id=r.order_id,
                exchange_order_id=r.exchange_order_id,
                exec_type=ExecType(r.exec_type),
                last_qty=int(r.last_qty),
                last_price=decimal_or_none(r.last_price),
                cum_qty=int(r.cum_qty),
                leaves_qty=int(r.leaves_qty),
                avg_price=decimal_or_none(r.avg_price),
                transact_time=r.transact_time,
                seq=int(r.seq),
            )
            for r in records
        ]
        # The sort key is the exec_id (for idempotency), not time: order here.
        return sorted(reports, key=ExecutionCursor.of)

    def page_for_order(self, order_id: str, after: ExecutionCursor | None, limit: int) -> ExecutionPage:
        # The table is ordered by exec_id, not by time, so the order's reports
        # are read in full (one consistent Query, as GET executions always did)
        # and the page is cut from them: what this bounds is the response
        # (Lambda's 6 MB), not the read. An index by (order_id, transact_time)
        # would bound the read too, at the price of eventually consistent pages.
        return execution_page(self.list_for_order(order_id), after, limit)
