"""The state writer and its transactions (azjobs.state.writer, azjobs.state.batch), without storage.

Against Azurite (tests/integration/test_state_transactions.py) the same writer sends real
entity group transactions; these check the coalescing, the wire format and the answers.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from azjobs.state.batch import RETRY, Write, build, parse, wire_entity
from azjobs.state.errors import StateUnavailable
from azjobs.state.entities import PARTITIONS, partition_of
from azjobs.state.writer import StateWriter


def entity(partition: str, row: str, **properties) -> dict:
    return {"PartitionKey": partition, "RowKey": row, **properties}


class GatedSend:
    """A transaction sender that holds each transaction until released, recording what it was sent."""

    def __init__(self, answers=None) -> None:
        self.sent: list[list[Write]] = []
        self.gate = threading.Event()
        self.in_flight: set[str] = set()
        self.overlap = False
        self.answers = answers
        self.lock = threading.Lock()

    def __call__(self, writes):
        partition = writes[0].key[0]
        with self.lock:
            if partition in self.in_flight:
                self.overlap = True
            self.in_flight.add(partition)
            self.sent.append(list(writes))
        self.gate.wait(10)
        with self.lock:
            self.in_flight.discard(partition)
        if self.answers is not None:
            return self.answers(writes)
        return [f'W/"{w.key[1]}"' for w in writes]


def write_all(writer, writes):
    answers: dict[str, object] = {}

    def one(write):
        try:
            answers[write.key[1]] = writer.write(write)
        except Exception as exc:
            answers[write.key[1]] = exc

    threads = [threading.Thread(target=one, args=(w,)) for w in writes]
    for thread in threads:
        thread.start()
    return threads, answers


def test_writes_waiting_for_a_partition_go_out_as_one_transaction():
    send = GatedSend()
    writer = StateWriter(send, threads=1)
    first, _ = write_all(writer, [Write(entity("p", "first"))])
    time.sleep(0.2)  # the first transaction is in flight; the next writes pile up behind it
    threads, answers = write_all(writer, [Write(entity("p", f"r{i}")) for i in range(10)])
    time.sleep(0.2)
    send.gate.set()
    for thread in first + threads:
        thread.join(10)
    assert [len(batch) for batch in send.sent] == [1, 10]
    assert answers == {f"r{i}": f'W/"r{i}"' for i in range(10)}
    assert (writer.transactions, writer.writes) == (2, 11)
    writer.close()


def test_a_transaction_holds_one_partition_and_one_write_per_entity():
    send = GatedSend()
    writer = StateWriter(send, threads=1)
    blocker, _ = write_all(writer, [Write(entity("p", "blocker"))])
    time.sleep(0.2)
    threads, _ = write_all(writer, [Write(entity("p", "same")), Write(entity("q", "other"))])
    time.sleep(0.1)
    more, _ = write_all(writer, [Write(entity("p", "same", Status="second"))])
    time.sleep(0.2)
    send.gate.set()
    for thread in blocker + threads + more:
        thread.join(10)
    for batch in send.sent:
        assert len({w.key[0] for w in batch}) == 1
        assert len({w.key[1] for w in batch}) == len(batch)
    same = [w.entity.get("Status") for batch in send.sent for w in batch if w.key[1] == "same"]
    assert same == [None, "second"]  # both sent, in the order they were written
    writer.close()


def test_one_partition_has_one_transaction_in_flight_at_a_time():
    send = GatedSend()
    writer = StateWriter(send, threads=4)
    threads, _ = write_all(writer, [Write(entity("p", f"r{i}")) for i in range(20)])
    time.sleep(0.3)
    assert len(send.sent) == 1  # four threads, one partition: the others wait for it
    send.gate.set()
    for thread in threads:
        thread.join(10)
    assert not send.overlap and sum(len(b) for b in send.sent) == 20
    writer.close()


def test_a_refused_write_gets_its_error_and_the_rest_are_sent_again():
    from azure.core.exceptions import ResourceModifiedError

    refused = ResourceModifiedError(message="412")
    refused.status_code = 412

    def answers(writes):
        rows = [w.key[1] for w in writes]
        if "stale" in rows:
            return [refused if row == "stale" else RETRY for row in rows]
        return [f'W/"{row}"' for row in rows]

    send = GatedSend(answers)
    send.gate.set()
    writer = StateWriter(send, threads=1)
    blocker_gate = threading.Event()
    original = send.gate
    send.gate = blocker_gate
    blocker, _ = write_all(writer, [Write(entity("p", "blocker"))])
    time.sleep(0.2)
    threads, got = write_all(writer, [Write(entity("p", "a")), Write(entity("p", "stale"), etag='W/"old"'),
                                      Write(entity("p", "b"))])
    time.sleep(0.2)
    send.gate = original
    blocker_gate.set()
    for thread in blocker + threads:
        thread.join(10)
    assert got["stale"] is refused
    assert got["a"] == 'W/"a"' and got["b"] == 'W/"b"'
    sizes = [sorted(w.key[1] for w in batch) for batch in send.sent]
    assert sizes == [["blocker"], ["a", "b", "stale"], ["a", "b"]]
    writer.close()


def test_a_transaction_failing_whole_answers_each_of_its_writes():
    def down(writes):
        raise StateUnavailable("the table is unreachable")

    writer = StateWriter(down, threads=2)
    threads, got = write_all(writer, [Write(entity("p", f"r{i}")) for i in range(5)])
    for thread in threads:
        thread.join(10)
    assert len(got) == 5 and all(isinstance(answer, StateUnavailable) for answer in got.values())
    writer.close()


def test_a_write_with_no_answer_in_time_is_state_unavailable():
    send = GatedSend()
    writer = StateWriter(send, threads=1, wait_s=0.3)
    with pytest.raises(StateUnavailable, match="no answer"):
        writer.write(Write(entity("p", "r")))
    send.gate.set()
    writer.close()


def test_a_closed_writer_refuses_writes():
    writer = StateWriter(lambda writes: [None] * len(writes))
    writer.close()
    with pytest.raises(StateUnavailable, match="closed"):
        writer.write(Write(entity("p", "r")))


# -- the wire format ---------------------------------------------------------------------------
def test_properties_carry_the_odata_types_table_storage_needs():
    moment = datetime(2026, 11, 28, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=1)))
    body = wire_entity({"PartitionKey": "p", "RowKey": "r", "Name": "x", "Count": 3, "Big": 2 ** 40, "Ratio": 0.5,
                        "Flag": True, "At": moment, "Gone": None})
    assert body == {"PartitionKey": "p", "RowKey": "r", "Name": "x", "Count": 3, "Big": str(2 ** 40),
                    "Big@odata.type": "Edm.Int64", "Ratio": 0.5, "Ratio@odata.type": "Edm.Double", "Flag": True,
                    "At": "2026-11-28T11:30:05.123456Z", "At@odata.type": "Edm.DateTime"}
    with pytest.raises(TypeError, match="'Blob': bytes"):
        wire_entity({"Blob": b"x"})


def test_a_transaction_body_is_one_changeset_of_merges_with_their_conditions():
    content_type, body = build("http://h/acct", "tbl", [
        Write(entity("jobs-1", "it's", Status="RUNNING"), etag='W/"e1"'), Write(entity("jobs-1", "b/c", Status="X"))])
    boundary = content_type.split("boundary=")[1]
    text = body.decode()
    assert text.startswith(f"--{boundary}\r\n") and text.endswith(f"--{boundary}--\r\n")
    requests = text.split("Content-Transfer-Encoding: binary\r\n\r\n")[1:]
    assert len(requests) == 2
    assert requests[0].startswith("MERGE http://h/acct/tbl(PartitionKey='jobs-1',RowKey='it%27%27s') HTTP/1.1\r\n")
    assert 'If-Match: W/"e1"' in requests[0] and "If-Match" not in requests[1]
    assert "RowKey='b%2Fc'" in requests[1]
    payload = requests[1].split("\r\n\r\n", 1)[1].split("\r\n--", 1)[0]
    assert json.loads(payload) == {"PartitionKey": "jobs-1", "RowKey": "b/c", "Status": "X"}


def _response(*parts: str) -> bytes:
    body = "".join(f"--cs\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{p}\r\n"
                   for p in parts)
    return f"--br\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n{body}--cs--\r\n--br--\r\n".encode()


def test_each_write_is_answered_with_its_etag():
    data = _response("HTTP/1.1 204 No Content\r\nContent-ID: 1\r\nETag: W/\"a\"\r\n",
                     "HTTP/1.1 204 No Content\r\nContent-ID: 2\r\nETag: W/\"b\"\r\n")
    assert parse(202, data, 2) == ['W/"a"', 'W/"b"']


def test_the_refused_write_is_named_and_the_others_are_to_be_sent_again():
    error = ('{"odata.error":{"code":"UpdateConditionNotSatisfied","message":{"lang":"en-US",'
             '"value":"1:The update condition specified in the request was not satisfied."}}}')
    data = _response(f"HTTP/1.1 412 Precondition Failed\r\nContent-ID: 2\r\nContent-Type: application/json\r\n\r\n{error}")
    answers = parse(202, data, 3)
    assert answers[0] is RETRY and answers[2] is RETRY
    assert answers[1].status_code == 412 and answers[1].error_code == "UpdateConditionNotSatisfied"


def test_without_a_content_id_the_index_in_the_message_names_the_write():
    error = '{"odata.error":{"code":"ResourceNotFound","message":{"value":"0:The specified resource does not exist."}}}'
    answers = parse(202, _response(f"HTTP/1.1 404 Not Found\r\n\r\n{error}"), 2)
    assert answers[0].status_code == 404 and answers[1] is RETRY


def test_a_transaction_refused_whole_raises_its_status_and_code():
    body = b'{"odata.error":{"code":"TableNotFound","message":{"value":"The table specified does not exist."}}}'
    with pytest.raises(Exception) as caught:
        parse(404, body, 2)
    assert caught.value.status_code == 404 and caught.value.error_code == "TableNotFound"
    with pytest.raises(Exception) as caught:
        parse(503, b"", 1, "ServerBusy")
    assert caught.value.status_code == 503 and caught.value.error_code == "ServerBusy"


def test_an_answer_short_of_writes_is_an_error_not_a_guess():
    data = _response("HTTP/1.1 204 No Content\r\nContent-ID: 1\r\nETag: W/\"a\"\r\n")
    with pytest.raises(Exception, match="1 answers to 2 writes"):
        parse(202, data, 2)


def test_records_spread_over_the_partitions_by_a_stable_hash_of_the_id():
    import uuid

    ids = [str(uuid.uuid4()) for _ in range(2_000)]
    partitions = {partition_of(job_id) for job_id in ids}
    assert partitions == {f"jobs-{n}" for n in range(PARTITIONS)}
    assert partition_of("order-42") == partition_of("order-42") == "jobs-%d" % (__import__("zlib").crc32(b"order-42")
                                                                                 % PARTITIONS)


def test_a_transaction_refused_whole_as_a_bad_request_is_split_so_only_the_bad_write_is_refused():
    from azjobs.storage.errors import storage_error

    sent: list[list[str]] = []

    def send(writes):
        rows = [w.key[1] for w in writes]
        sent.append(rows)
        if "bad" in rows:  # the service's 400 for the transaction, naming no write
            raise storage_error(400, "InvalidInput", "One of the request inputs is not valid.")
        return [f'W/"{row}"' for row in rows]

    writer = StateWriter(send, threads=1)
    gate = threading.Event()
    first_sent = threading.Event()
    real_send = writer._send

    def gated(writes):
        if not first_sent.is_set():
            first_sent.set()
            assert gate.wait(10)
        return real_send(writes)

    writer._send = gated
    answers: dict[str, object] = {}

    def write(row):
        try:
            answers[row] = writer.write(Write({"PartitionKey": "p", "RowKey": row, "V": 1}))
        except Exception as exc:  # noqa: BLE001
            answers[row] = exc

    threads = [threading.Thread(target=write, args=("first",))]
    threads[0].start()
    assert first_sent.wait(10)
    for row in ("a", "b", "bad", "c"):
        threads.append(threading.Thread(target=write, args=(row,)))
        threads[-1].start()
    deadline = time.monotonic() + 10
    while sum(len(q) for q in writer._pending.values()) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gate.set()
    for thread in threads:
        thread.join(10)
    writer.close()
    assert getattr(answers["bad"], "status_code", None) == 400
    assert {row: answers[row] for row in ("first", "a", "b", "c")} == \
        {"first": 'W/"first"', "a": 'W/"a"', "b": 'W/"b"', "c": 'W/"c"'}
    assert sent[1] == ["a", "b", "bad", "c"] and writer.splits >= 2
