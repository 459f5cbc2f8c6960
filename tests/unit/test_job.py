import asyncio
from datetime import datetime, timedelta, timezone

import pytest

import azjobs
from azjobs.errors import ArgumentError, ConfigurationError, UnknownJobError
from azjobs.model.queue_names import poison_queue_name
from azjobs.model.registry import Registry
from azjobs.model.retry import Backoff, Fixed, NoRetry

reg = Registry()


class RecordingClient:
    """Captures what would be sent (pure logic: no storage)."""

    def __init__(self):
        self.sent = []

    def send(self, envelope, *, delay=None, at=None):
        self.sent.append((envelope, delay, at))
        return envelope.id

    def send_many(self, envelopes, *, delay=None, at=None, max_workers=8):
        return [self.send(e, delay=delay, at=at) for e in envelopes]


@azjobs.job(queue="emails", registry=reg)
def send_email(to, subject="hi", *, urgent=False):
    return f"{to}:{subject}:{urgent}"


@azjobs.job(queue="emails", name="custom-name", registry=reg, max_retries=1)
def renamed(x):
    return x


class Resize(azjobs.Job):
    queue = "images"
    registry = reg
    retry = Fixed(5, max_retries=2)

    def perform(self, name, width=100):
        return (name, width)


class BaseWithHelpers(azjobs.Job):
    abstract = True
    queue = "images"

    def helper(self):
        return "help"


class Concrete(BaseWithHelpers, registry=reg, name="concrete"):
    def perform(self):
        return self.helper()


@azjobs.job(queue="async-q", registry=reg)
async def async_job(x):
    await asyncio.sleep(0)
    return x * 2


def test_function_job_stays_callable_and_registered():
    assert send_email("a@b", subject="s") == "a@b:s:False"
    assert send_email.__name__ == "send_email"
    definition = reg.get("tests.unit.test_job.send_email")
    assert definition is send_email.job and definition.queue == "emails"
    assert definition.run(("x",), {"urgent": True}) == "x:hi:True"


def test_name_override_and_options():
    assert reg.get("custom-name").retry_policy.max_retries == 1


def test_class_job_registers_and_runs_perform():
    definition = reg.get("tests.unit.test_job.Resize")
    assert Resize.job is definition
    assert definition.queue == "images"
    assert definition.run(("a.png",), {"width": 5}) == ("a.png", 5)
    assert isinstance(definition.retry_policy, Fixed) and definition.retry_policy.max_retries == 2


def test_abstract_base_is_not_registered_and_subclass_inherits_queue():
    assert "tests.unit.test_job.BaseWithHelpers" not in reg
    assert reg.get("concrete").run((), {}) == "help"
    assert reg.get("concrete").queue == "images"


def test_async_job_is_detected():
    definition = async_job.job
    assert definition.is_async
    assert asyncio.run(definition.run((2,), {})) == 4


class AsyncJob(azjobs.Job):
    queue = "abc"
    registry = reg
    name = "aj"

    async def perform(self, x):
        return x


def test_async_class_job_is_detected():
    assert reg.get("aj").is_async


def test_default_policy_is_backoff_with_four_retries():
    policy = reg.get("tests.unit.test_job.send_email").retry_policy
    assert isinstance(policy, Backoff) and policy.max_retries == 4


def test_registry_queues_and_lookup():
    assert {"emails", "images", "async-q"} <= set(reg.queues())
    with pytest.raises(UnknownJobError, match="nope"):
        reg.get("nope")


def test_duplicate_name_with_other_target_is_an_error():
    def other():
        pass

    other.__qualname__ = "other"
    with pytest.raises(ConfigurationError, match="already registered"):
        azjobs.job(queue="emails", name="custom-name", registry=reg)(other)


def test_reregistering_the_same_target_is_allowed():
    name = "tests.unit.test_job.send_email"
    original = globals()["send_email"].job
    jobs_before = len(reg)

    def send_email(to, subject="hi", *, urgent=False):  # same module.qualname, as after a reload
        return "reloaded"

    send_email.__qualname__ = "send_email"
    send_email.__module__ = __name__
    try:
        reloaded = azjobs.job(queue="emails", registry=reg)(send_email)
        # No error, and the name now runs the new definition (not the stale one), in the same one entry.
        assert reloaded.job is not original and reloaded.job.target_id == original.target_id
        assert reg.get(name) is reloaded.job and len(reg) == jobs_before
        assert reg.get(name).run(("x",), {}) == "reloaded"
    finally:
        # Registering the original definition again is allowed too (and restores the module's job).
        assert reg.register(original) is original
    assert reg.get(name) is original and len(reg) == jobs_before


@pytest.mark.parametrize(
    "queue,message",
    [
        ("ab", "3 to 56"),
        ("a" * 57, "3 to 56"),
        ("Emails", "lowercase"),
        ("-emails", "dash"),
        ("emails-", "dash"),
        ("e--mails", "single dashes"),
        ("em_ails", "lowercase"),
        (42, "string"),
    ],
)
def test_invalid_queue_names_fail_at_declaration(queue, message):
    with pytest.raises(ConfigurationError, match=message):
        azjobs.job(queue=queue, registry=Registry())(send_email.fn)


def test_valid_queue_name_limits():
    r = Registry()
    longest = azjobs.job(queue="a" * 56, registry=r, name="long")(send_email.fn)
    shortest = azjobs.job(queue="a-1", registry=r, name="short")(send_email.fn)
    assert longest.job.queue == "a" * 56 and shortest.job.queue == "a-1"
    assert r.get("long") is longest.job and r.get("short") is shortest.job
    assert r.queues() == sorted(["a" * 56, "a-1"])
    # The 56-character limit leaves room for the poison twin within Azure's 63 characters.
    assert poison_queue_name("a" * 56) == "a" * 56 + "-poison" and len(poison_queue_name("a" * 56)) == 63


def test_unknown_option_is_an_error():
    with pytest.raises(ConfigurationError, match="unknown job option.*retries"):
        azjobs.job(queue="emails", retries=3)


def test_missing_queue_is_an_error():
    with pytest.raises(ConfigurationError, match="queue="):
        azjobs.job(max_retries=3)


def test_nested_function_is_refused():
    def outer():
        @azjobs.job(queue="emails", registry=Registry())
        def inner():
            pass

    with pytest.raises(ConfigurationError, match="module-level"):
        outer()


def test_class_without_perform_is_an_error():
    with pytest.raises(ConfigurationError, match="perform"):
        type("NoPerform", (azjobs.Job,), {"queue": "emails", "__module__": __name__, "__qualname__": "NoPerform"})


def test_class_without_queue_is_an_error():
    with pytest.raises(ConfigurationError, match="queue"):
        type("NoQueue", (azjobs.Job,), {"perform": lambda self: None, "__qualname__": "NoQueue"})


def test_class_unknown_keyword_option_is_an_error():
    with pytest.raises(ConfigurationError, match="unknown job option"):
        type("K", (azjobs.Job,), {"perform": lambda self: None, "queue": "abc", "__qualname__": "K"}, colour="red")


def test_bad_retry_option_is_an_error():
    with pytest.raises(ConfigurationError, match="retry policy"):
        azjobs.job(queue="emails", retry="often", registry=Registry())(send_email.fn)
    with pytest.raises(ConfigurationError, match="max_retries"):
        azjobs.job(queue="emails", max_retries=-1, registry=Registry())(send_email.fn)
    with pytest.raises(ConfigurationError, match="exception classes"):
        azjobs.job(queue="emails", retry_on=[ValueError, "x"], registry=Registry())(send_email.fn)


def test_enqueue_builds_an_envelope_with_options_apart_from_arguments():
    client = RecordingClient()
    job_id = send_email.options(client=client, queue="other-queue", max_retries=1).enqueue("a@b", subject="s")
    envelope, delay, at = client.sent[0]
    assert envelope.id == job_id
    assert envelope.queue == "other-queue"
    assert envelope.options == {"max_retries": 1}
    assert envelope.args == ("a@b",) and envelope.kwargs == {"subject": "s"}


@azjobs.job(queue="emails", registry=reg, name="collide")
def takes_queue(queue, delay):
    return queue, delay


def test_job_kwargs_named_like_options_do_not_collide():
    client = RecordingClient()
    takes_queue.options(client=client).enqueue(queue="user-value", delay=5)
    envelope, delay, _ = client.sent[0]
    assert envelope.kwargs == {"queue": "user-value", "delay": 5}
    assert envelope.queue == "emails" and delay is None


def test_delay_and_at_travel_to_the_client():
    client = RecordingClient()
    send_email.options(client=client, delay=timedelta(seconds=30)).enqueue("a")
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    send_email.options(client=client, at=when).enqueue("a")
    assert client.sent[0][1] == timedelta(seconds=30)
    assert client.sent[1][2] == when


def test_unknown_call_option_and_conflicting_delay():
    with pytest.raises(ConfigurationError, match="unknown call option"):
        send_email.options(priority=3)
    with pytest.raises(ConfigurationError, match="either delay= or at="):
        send_email.options(delay=1, at=datetime.now(timezone.utc))
    with pytest.raises(ConfigurationError, match="queue name"):
        send_email.options(queue="Bad_Queue")


def test_arguments_that_do_not_fit_the_signature_fail_at_enqueue():
    client = RecordingClient()
    with pytest.raises(ArgumentError, match="arguments do not fit"):
        send_email.options(client=client).enqueue()
    with pytest.raises(ArgumentError, match="unexpected keyword"):
        send_email.options(client=client).enqueue("a", colour="red")
    with pytest.raises(ArgumentError):
        Resize.options(client=client).enqueue("a", 1, 2)
    assert client.sent == []


def test_non_json_argument_fails_in_the_caller():
    client = RecordingClient()
    with pytest.raises(ArgumentError, match=r"kwargs\['subject'\]"):
        send_email.options(client=client).enqueue("a", subject=object())


def test_enqueue_many_coerces_items_and_reports_bad_ones():
    client = RecordingClient()
    result = send_email.options(client=client).enqueue_many(
        [("a",), {"to": "b", "subject": "s"}, "c", azjobs.Call("d", urgent=True), ("e", object()), ()]
    )
    assert len(result.results) == 6
    assert [i for i, _ in result.failures] == [4, 5]
    assert len(result.ids) == 4
    assert [e.args for e, *_ in client.sent] == [("a",), (), ("c",), ("d",)]
    with pytest.raises(azjobs.EnqueueError, match="2 of 6"):
        result.raise_for_failures()


def test_class_style_enqueue_uses_class_methods():
    client = RecordingClient()
    Resize.options(client=client).enqueue("pic.png", width=3)
    envelope = client.sent[0][0]
    assert envelope.job == "tests.unit.test_job.Resize" and envelope.queue == "images"


def test_policy_for_applies_per_call_max_retries():
    definition = send_email.job
    envelope = azjobs.Envelope.build(definition.name, ("a",), options={"max_retries": 0})
    assert definition.policy_for(envelope).max_retries == 0
    assert definition.policy_for(azjobs.Envelope.build(definition.name, ("a",))).max_retries == 4


class Once(azjobs.Job):
    queue = "once"
    registry = reg
    retry = NoRetry()

    def perform(self):
        pass


def test_no_retry_policy_on_class():
    assert isinstance(Once.job.retry_policy, NoRetry)


@azjobs.job(queue="%AZJOBS_TEST_ORDERS_QUEUE%", registry=reg, name="orders")
def place_order(order_id):
    return order_id


def test_app_setting_queue_is_resolved_when_sending(monkeypatch):
    client = RecordingClient()
    monkeypatch.setenv("AZJOBS_TEST_ORDERS_QUEUE", "orders-prod")
    place_order.options(client=client).enqueue(7)
    assert client.sent[0][0].queue == "orders-prod"
    assert place_order.job.queue == "%AZJOBS_TEST_ORDERS_QUEUE%"
    monkeypatch.delenv("AZJOBS_TEST_ORDERS_QUEUE")
    with pytest.raises(ConfigurationError, match="not set"):
        place_order.options(client=client).enqueue(7)
