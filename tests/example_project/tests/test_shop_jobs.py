from datetime import datetime, timedelta, timezone

import pytest

import azjobs
import azjobs.testing
import shop_jobs


def test_placing_an_order_sends_its_receipt(azjobs_inline):
    order_job = shop_jobs.place_order.enqueue(42, "ada@example.com")  # runs now, and so does what it enqueues

    receipt_job = azjobs.wait(order_job)["receipt_job"]
    assert azjobs.wait(receipt_job) == "receipt for order 42 sent to ada@example.com"


def test_a_bad_address_is_retried_then_poisoned(azjobs_inline):
    job_id = shop_jobs.send_receipt.enqueue(7, "nobody")

    record = azjobs.result(job_id)
    assert record.status is azjobs.JobStatus.FAILED
    assert record.attempts == 3  # max_retries=2, no waiting between attempts
    assert "not an email address" in record.errors[-1].traceback
    [poisoned] = azjobs.testing.poisoned("emails")
    assert poisoned.error.type == "ValueError"


def test_arguments_must_be_plain_json(azjobs_inline):
    with pytest.raises(azjobs.ArgumentError):
        shop_jobs.send_receipt.enqueue(object(), "ada@example.com")


def test_the_daily_report_fires_on_weekday_mornings(azjobs_inline):
    monday_noon = datetime(2027, 1, 4, 12, 0, tzinfo=timezone.utc)
    job_id = azjobs.testing.fire("shop_jobs.daily_report", at=monday_noon)  # the 07:00 tick

    assert azjobs.wait(job_id) == "report for 2027-01-04"


def test_a_delayed_receipt_waits_for_its_time():
    with azjobs.testing.inline(delays="keep"):
        job_id = shop_jobs.send_receipt.enqueue_in(timedelta(days=3), 8, "grace@example.com")
        assert azjobs.result(job_id).status is azjobs.JobStatus.READY

        azjobs.testing.run_due(at=datetime.now(timezone.utc) + timedelta(days=3, minutes=1))
        assert azjobs.result(job_id).status is azjobs.JobStatus.SUCCESSFUL


def test_what_checking_out_enqueues(azjobs_recording):
    shop_jobs.place_order.enqueue(9, "linus@example.com")
    assert [(job.job, job.args) for job in azjobs_recording.jobs] == [
        ("shop_jobs.place_order", (9, "linus@example.com"))]

    azjobs_recording.run_all()  # runs it, and records the receipt it enqueues
    assert [job.job for job in azjobs_recording.jobs] == ["shop_jobs.place_order", "shop_jobs.send_receipt"]
