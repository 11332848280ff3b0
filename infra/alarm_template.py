"""Per-function alarms of the merge template (infra/build_template.py): errors and throttles, to the alarm topic."""

from __future__ import annotations

from typing import Any


def function_alarms(handler: str, function_id: str, name_suffix: str) -> dict[str, Any]:
    """A function's Errors and Throttles alarms, named ${ResourcePrefix}-<name_suffix>-<metric>."""

    def alarm(metric: str, description: str, evaluation: dict[str, int]) -> dict[str, Any]:
        return {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmName": {"Fn::Sub": f"${{ResourcePrefix}}-{name_suffix}-{metric.lower()}"},
                "AlarmDescription": description,
                "Namespace": "AWS/Lambda",
                "MetricName": metric,
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
                "Statistic": "Sum",
                "Period": 60,
                **evaluation,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": "AlarmTopic"}],
                "OKActions": [{"Ref": "AlarmTopic"}],
            },
        }

    return {
        # Two of three minutes: a batch whose every record met a transient
        # exchange error fails the invocation once (and is retried); errors
        # that persist are what needs attention.
        f"{function_id}ErrorsAlarm": alarm(
            "Errors",
            f"{handler} keeps failing.",
            {"EvaluationPeriods": 3, "DatapointsToAlarm": 2},
        ),
        # Any throttle: the function hit its concurrency limit and work waits.
        f"{function_id}ThrottlesAlarm": alarm(
            "Throttles",
            f"{handler} is throttled.",
            {"EvaluationPeriods": 1, "DatapointsToAlarm": 1},
        ),
    }
