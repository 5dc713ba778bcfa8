"""A minimal Faust app for the conformance suite: counts records per key in a changelog-backed table.

On a record whose value is ``b"report"`` it produces the whole table as JSON to the report topic.
Configured by env: BROKER, APP_ID, IN_TOPIC, REPORT_TOPIC, WEB_PORT, STATE_DIR.

It runs Faust the way the streams app does, with ``streams.recovery_order`` installed: faust's own
``Recovery.on_recovery_completed`` can drop the first records after the seek to the committed
offsets. A clean-clone CI run of this test without it lost the 35 records that the restarted worker
found on partition 1 (7 keys short by exactly 5 while later "report" records on the same partition
were processed).
"""

import json
import os

import faust

from streams import recovery_order

recovery_order.install()

app = faust.App(
    os.environ["APP_ID"],
    broker=f"kafka://{os.environ['BROKER']}",
    store="memory://",
    web_host="127.0.0.1",
    web_port=int(os.environ["WEB_PORT"]),
    web_enabled=False,
    broker_session_timeout=6,
    topic_partitions=2,
    datadir=os.environ["STATE_DIR"],
)
source = app.topic(os.environ["IN_TOPIC"], key_type=bytes, value_type=bytes, value_serializer="raw",
                   key_serializer="raw", partitions=2)
report = app.topic(os.environ["REPORT_TOPIC"], value_serializer="raw", key_serializer="raw")
counts = app.Table("counts", default=int, partitions=2)


@app.agent(source)
async def count(stream):
    async for key, value in stream.items():
        if value == b"report":
            await report.send(key=b"report", value=json.dumps(dict(counts.items())).encode())
        else:
            counts[key.decode()] += 1


if __name__ == "__main__":
    app.main()
