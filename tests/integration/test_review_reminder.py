"""The review reminder carries what a reviewer needs to act (issue 30): their own code for the review act, on a
channel that reaches them alone, with both ways to use it (the change-review deployment and `changeflow review`).
It told people to run `changeflow review` without the `--code` the command requires, and sent no code."""

from __future__ import annotations

from models import Act, ChangeState
from tests.helpers import awaiting_review
from tests.integration.test_notifications import (deliver_until_settled, make_notifier, org_with_channels,  # noqa: F401
                                                  receiver, smtp)


def test_a_review_reminder_carries_the_reviewers_review_code_on_personal_channels_only(tmp_path, smtp, receiver):
    org = org_with_channels({"bob": [{"type": "email", "address": "bob@example.org"}],
                             "erin": [{"type": "webhook", "url": f"{receiver.url}/hook"}]})
    notifier, services = make_notifier(tmp_path, org, smtp_port=smtp.port)
    change = awaiting_review(services)
    # As the sweep announces it (flows/sweep.py::remind_reviews).
    assert notifier.announce(change, "review_due", ["bob", "erin"], round_="due", deadline=change.review_due_at,
                             personal_code=True) == 2
    deliver_until_settled(notifier)

    review_code = services.approvals.approval_code_for(change.key, "bob", Act.review)
    (_, mail), = smtp.messages
    text = mail.get_body(("plain",)).get_content()
    assert f"changeflow review {change.key} --as bob --code {review_code}" in text
    assert "change-review / record" in text
    assert services.approvals.approval_code_for(change.key, "bob", Act.approve) not in text  # the review act's only
    shared = receiver.delivered("/hook")[0].body.decode()
    assert "see your e-mail" in shared
    assert services.approvals.approval_code_for(change.key, "erin", Act.review) not in shared
    # The code in the message is the one that records the review.
    closed = services.reviews.record(change.key, actor="bob", code=review_code, summary="pool exhausted")
    assert closed.state == ChangeState.closed
