"""Local stand-in for Lambda's event sources: feeds SQS messages, Kinesis and DynamoDB stream records and schedules
to a Chalice app.

One module per part of what Lambda does around a handler; import a name
from the module that owns it:

- settings: the mapping settings Chalice cannot express (infra/event_sources.json)
- events: Lambda-shaped events (SQS, Kinesis, DynamoDB stream, scheduled) and on-failure records
- invocation: invoking a handler once, as Lambda would
- verdicts: which items of a batch Lambda treats as failed
- retries: what Lambda does next for a shard after an invocation
- worker, sqs, schedule: the polling threads, one per event source
- shards: the stream mappings' shard pollers, whatever the stream; kinesis, dynamodb_streams: each service's calls
- checkpoints, destination: shard leases and the on-failure destination
- options, app_runner: the Runner that builds the workers of an app
- cli (`python -m devstack.runner`): the process make run and the tests start
"""
