"""Garbage flood: 1,000 malformed messages mixed with 100 good jobs, one worker process.

The bodies are seeded-random: text that is not base64, base64 of random bytes, base64 of
random JSON, and near-envelopes (a real envelope with one field broken, or arguments that
do not fit the job). Every good job must run, every bad message must end in
``<queue>-poison`` as a ``PoisonRecord`` naming its original message id, and the worker
must survive the whole run (one process, exit 0 on SIGTERM).
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from azjobs import Envelope
from azjobs.model.poison_record import PoisonRecord
from tests.reliability.support import (Ledger, actions, all_finished, log_text, message_count, receive_all, report,
                                       spawn, stop, wait_for)

BAD = 1000
GOOD = 100
SEED = int(os.environ.get("AZJOBS_RELIABILITY_SEED", "6004"))
NOT_BASE64 = "!#$%&()*,-.:;<>?@[]^_`{|}~ é漢"


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.randint(-10**12, 10**12)
    if kind == 1:
        return rng.random() * rng.choice([1, -1e9, 1e-9])
    if kind == 2:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(20)))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = ["azjobs_x", "job", "args", "id", "data", "type"] + list(string.ascii_lowercase)
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def near_envelope(rng: random.Random, queue: str) -> bytes:
    """A real ``rel.work`` envelope with one thing wrong; never an unknown job or a future due time."""
    data = Envelope.build("rel.work", ("never-run", 0), queue=queue).to_dict()
    mutation = rng.randrange(12)
    if mutation == 0:
        del data[rng.choice(["azjobs", "id", "job", "enqueued_at"])]
    elif mutation == 1:
        data["azjobs"] = rng.choice([2, "1", True, 0, None, 1.5])
    elif mutation == 2:
        data["job"] = rng.choice(["", 123, ["rel.work"], {"name": "rel.work"}])
    elif mutation == 3:
        data["attempt"] = rng.choice([0, -1, "2", True, 1.5])
    elif mutation == 4:
        name = rng.choice(["args", "kwargs"])
        data[name] = rng.choice([{} if name == "args" else [], "x", 5, True, "[]"])
    elif mutation == 5:
        data[rng.choice(["enqueued_at", "due_at", "first_failed_at"])] = rng.choice(
            ["yesterday", 12, "2026-01-01T00:00:00", "", "2026-13-45T99:00:00Z"])
    elif mutation == 6:  # (a malformed ``trace`` is dropped and the job runs, like ``scheduled_at``: not garbage)
        data["options"] = rng.choice([[], "x", 7])
    elif mutation == 7:
        data[rng.choice(["id", "queue", "payload_ref"])] = rng.choice([5, [], {}])
    elif mutation == 8:  # arguments that do not fit work(key, seconds=0.0)
        data["args"], data["kwargs"] = rng.choice([([], {}), (["k", 0, 1, 2], {}), (["k"], {"nope": 1}),
                                                   ([], {"seconds": 1})])
    elif mutation == 9:  # truncated or padded JSON
        text = json.dumps(data)
        return (text[:rng.randrange(len(text))] if rng.random() < 0.5 else text + ",}").encode()
    elif mutation == 10:  # not UTF-8
        return json.dumps(data).encode() + bytes([rng.randrange(0x80, 0x100)])
    else:  # a number JSON cannot carry
        return json.dumps(data).replace('"never-run", 0', '"never-run", ' + rng.choice(["NaN", "Infinity", "1e999"])).encode()
    return json.dumps(data).encode()


def garbage(rng: random.Random, queue: str) -> str:
    """One bad message text, as it will sit on the queue."""
    kind = rng.randrange(4)
    if kind == 0:  # not base64 at all (the host would poison it raw, unread)
        alphabet = string.ascii_letters + string.digits + NOT_BASE64
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 200)))
        return text + rng.choice(NOT_BASE64)
    if kind == 1:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    elif kind == 2:
        raw = json.dumps(random_json(rng)).encode()
    else:
        raw = near_envelope(rng, queue)
    return base64.b64encode(raw).decode("ascii")


def test_a_garbage_flood_is_dead_lettered_and_the_good_jobs_all_run(connection_string, client, queue_name, raw_queue,
                                                                    test_dir, processes):
    rng = random.Random(SEED)
    queue = raw_queue(queue_name)
    poison = raw_queue(f"{queue_name}-poison")
    client.ensure_queue(queue_name)
    good_keys = [f"g{i:03d}" for i in range(GOOD)]
    bodies = [(False, garbage(rng, queue_name)) for _ in range(BAD)]
    bodies += [(True, Envelope.build("rel.work", (key, 0), queue=queue_name).encode("base64")) for key in good_keys]
    rng.shuffle(bodies)
    with ThreadPoolExecutor(8) as pool:
        sent = list(pool.map(lambda item: (item[0], queue.send_message(item[1]).id), bodies))
    bad_ids = {message_id for good, message_id in sent if not good}
    assert len(bad_ids) == BAD

    started_at = time.monotonic()
    worker = spawn(connection_string, test_dir, "-q", queue_name, "-r", "30")
    processes.append(worker)
    assert wait_for(all_finished(test_dir, good_keys), timeout=120), log_text(test_dir)[-3000:]
    assert wait_for(lambda: message_count(queue) == 0, timeout=60), "messages left on the queue"
    drained_s = time.monotonic() - started_at
    assert worker.poll() is None, "the worker died during the flood"
    assert stop(worker) == 0

    records = [PoisonRecord.decode(message.content, "base64", queue_name) for message in receive_all(poison)]
    poisoned_ids = Counter(record.message_id for record in records)
    ledger = Ledger.read(test_dir)
    reasons = Counter(record.error.reason for record in records)
    report("garbage", bad=BAD, good=GOOD, good_ran=ledger.finished(good_keys), poisoned=len(records),
           bad_not_poisoned=len(bad_ids - set(poisoned_ids)), worker_processes=1,
           drain_s=round(drained_s, 1), reasons=dict(sorted(reasons.items())), lost=len(ledger.lost(good_keys)))
    assert ledger.lost(good_keys) == []
    assert set(poisoned_ids) == bad_ids  # every bad message, and nothing else
    assert all(not record.from_host and record.error.type for record in records)  # azjobs records, with errors
    assert "never-run" not in ledger.starts  # no near-envelope ran
    assert {pid for key in good_keys for pid, _ in ledger.finishes[key]} == {worker.pid}
    events = actions(test_dir)
    assert not {"fetch_loop_crashed", "worker_error", "core_failed"} & set(events)
    assert events.count("job_dead_lettered") >= BAD
