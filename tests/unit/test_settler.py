"""The settler's reading of a delete's answers: when "message not found" means our own delete landed.

The errors are the ones the worker's deletes raise (the SDK's, through azjobs' transport): ``ServiceResponseError``
when the connection reset after the request went out, ``ServiceRequestError`` when it never went
out, and a 404 ``MessageNotFound`` as the SDK raises it.
"""

from __future__ import annotations

from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from azjobs.storage.errors import storage_error
from azjobs.runtime.settler import Settler


def not_found():
    return storage_error(404, "MessageNotFound", "The specified message does not exist.")


def answer_lost():
    return ServiceResponseError("no answer from storage: ConnectionResetError(104, 'Connection reset by peer')")


def not_sent():
    return ServiceRequestError("could not send to storage: ConnectionRefusedError(111, 'Connection refused')")


class Deletes:
    """Raises ``errors`` in turn, then deletes; records each call's options."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.options = []

    def delete_message(self, message_id, pop_receipt, **options):
        self.options.append({k: v for k, v in options.items() if k != "raw_response_hook"})
        if self.errors:
            error = self.errors.pop(0)
            if isinstance(error, Answers):  # the SDK's attempts inside this try: their statuses, then the error
                for status in error.statuses:
                    options["raw_response_hook"](Answer(status))
                error = error.error
            raise error


class Answer:
    def __init__(self, status):
        self.http_response = type("HttpResponse", (), {"status_code": status})()


class Answers:
    """A try in which the SDK got ``statuses`` (retrying the first ones itself) and then raised ``error``."""

    def __init__(self, statuses, error):
        self.statuses, self.error = statuses, error


def settle(errors, held=lambda: True):
    """Run one delete through a settler; (deleted by us?, tries, each try's options, delete failed?)."""
    deletes, deleted, failed = Deletes(errors), [], []
    settler = Settler(1, on_delete_failed=lambda: failed.append(1), sleep=lambda s: None).start()
    try:
        settler.delete(deletes, "q", "m1", "r1", on_deleted=lambda: deleted.append(1), held=held)
        assert settler.flush(10)
    finally:
        settler.stop()
    return bool(deleted), len(deletes.options), deletes.options, bool(failed)


def test_not_found_after_a_try_whose_answer_was_lost_is_our_delete_and_settles_the_blob():
    assert settle([answer_lost(), not_found()]) == (True, 2, [{"retry_read": 0}] * 2, False)


def test_not_found_after_an_unsent_try_and_then_an_unanswered_one_is_our_delete_too():
    assert settle([not_sent(), answer_lost(), not_found()])[:2] == (True, 3)


def test_not_found_on_the_first_try_is_someone_elses_message_and_keeps_the_blob():
    assert settle([not_found()]) == (False, 1, [{"retry_read": 0}], False)


def test_not_found_after_a_try_that_never_went_out_keeps_the_blob():
    assert settle([not_sent(), not_found()])[:2] == (False, 2)


def test_not_found_after_an_unanswered_try_once_the_lease_ran_out_keeps_the_blob():
    # Past the lease another consumer may hold the message under a new receipt (Azure answers 404 to a stale one).
    assert settle([answer_lost(), not_found()], held=lambda: False)[:2] == (False, 2)


def test_without_word_of_the_lease_not_found_after_an_unanswered_try_keeps_the_blob():
    assert settle([answer_lost(), not_found()], held=None)[:2] == (False, 2)


def test_a_mismatched_receipt_after_an_unanswered_try_is_someone_elses_message():
    mismatch = storage_error(400, "PopReceiptMismatch", "The specified pop receipt did not match.")
    assert settle([answer_lost(), mismatch])[:2] == (False, 2)


def test_a_delete_the_sdk_may_not_resend_after_a_lost_answer_but_may_retry_when_throttled():
    # retry_read=0 only: the SDK's policy keeps its retries (with back-off) for refused connections and 503s.
    assert settle([])[2] == [{"retry_read": 0}]


def test_rejected_credentials_on_a_delete_are_not_retried_and_take_the_rejected_credential_path():
    from azure.core.exceptions import ClientAuthenticationError

    rejected = ClientAuthenticationError(message="Server failed to authenticate the request.")
    rejected.status_code, rejected.error_code = 403, "AuthenticationFailed"
    reported = []
    deletes, failed = Deletes([rejected]), []
    settler = Settler(1, on_delete_failed=lambda: failed.append(1), sleep=lambda s: None,
                      on_credentials_rejected=lambda queue, exc: reported.append((queue, exc))).start()
    try:
        settler.delete(deletes, "q", "m1", "r1", held=lambda: True)
        assert settler.flush(10)
    finally:
        settler.stop()
    assert len(deletes.options) == 1 and failed == [1] and reported == [("q", rejected)]


def test_not_found_after_the_sdk_retried_a_500_in_the_same_try_is_our_delete():
    # Storage answered 500 (the delete may have completed all the same); the SDK's retry then read 404.
    assert settle([Answers([500, 404], not_found())])[:2] == (True, 1)


def test_not_found_after_the_sdk_retried_a_503_keeps_the_blob():
    # 503 ServerBusy: the service did not process the delete, so the 404 is someone else's doing.
    assert settle([Answers([503, 404], not_found())])[:2] == (False, 1)


def test_not_found_after_a_retried_500_once_the_lease_ran_out_keeps_the_blob():
    assert settle([Answers([500, 404], not_found())], held=lambda: False)[:2] == (False, 1)
