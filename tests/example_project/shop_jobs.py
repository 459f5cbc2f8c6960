"""The shop's background jobs."""

import azjobs


@azjobs.job(queue="emails", max_retries=2)
def send_receipt(order_id: int, email: str) -> str:
    if "@" not in email:
        raise ValueError(f"not an email address: {email!r}")
    return f"receipt for order {order_id} sent to {email}"


@azjobs.job(queue="orders")
def place_order(order_id: int, email: str) -> dict:
    receipt_job = send_receipt.enqueue(order_id, email)
    return {"order": order_id, "receipt_job": receipt_job}


@azjobs.job(queue="reports", schedule="0 0 7 * * Mon-Fri")
def daily_report() -> str:
    return f"report for {azjobs.current_job().scheduled_at:%Y-%m-%d}"
