"""A subscription's filter, applied by the poller where Pub/Sub does not apply it: on the emulator.

The emulator accepts a filter when a subscription is created and then delivers every message.
Google Cloud filters on its side, and the app must not filter again. So with PUBSUB_EMULATOR_HOST
set the poller reads the subscription's filter (at the start and on every reconnect) and acks the
messages it does not match without storing them, which is what Pub/Sub does. A filter that
app.filterlang cannot parse is not applied: every message is stored and the reason is logged once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from app.filterlang import Filter, FilterSyntaxError, parse
from app.pubsub.client import CALL_ERRORS, on_emulator, within

log = logging.getLogger(__name__)

# Reading the filter, retries included: the poller checks for a Stop only between steps.
READ_SECONDS = 5.0


def filters_locally(config: Mapping[str, Any]) -> bool:
    """Whether the poller applies subscription filters itself: only on the emulator, which ignores them."""
    return on_emulator(config)


class LocalFilter:
    """The filter of one subscription, as read from Pub/Sub, and what it has kept out so far."""

    def __init__(self, client, subscription_path: str):
        self.client = client
        self.subscription_path = subscription_path
        self.expression = ""
        self.filter: Filter | None = None
        # Why the filter is not applied (it could not be parsed or read); None while all is well.
        self.problem: str | None = None
        self.filtered_count = 0
        self._logged: set[str] = set()

    def refresh(self) -> None:
        """Read the subscription's filter again (it cannot change on Pub/Sub, but the subscription may
        have been deleted and created anew under the same name)."""
        try:
            subscription = self.client.get_subscription(subscription=self.subscription_path, **within(READ_SECONDS))
        except CALL_ERRORS as error:
            # Pulling reports a missing subscription or a permission in its own words; until the
            # filter is known, the last one read stays, and with none every message is stored.
            self._note(f"could not read the subscription's filter ({error.__class__.__name__}); "
                       "messages are stored unfiltered until it can be read")
            return
        expression = subscription.filter
        self.expression = expression
        try:
            self.filter = parse(expression) if expression.strip() else None
            self.problem = None
        except FilterSyntaxError as error:
            self.filter = None
            self._note(f"the subscription's filter {expression!r} is not understood here ({error}); "
                       "every message is stored")

    def _note(self, problem: str) -> None:
        self.problem = problem
        if problem not in self._logged:
            self._logged.add(problem)
            log.warning("Subscription %s: %s", self.subscription_path, problem)

    def keep(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows the filter matches; the others are counted (their messages are acked with the batch)."""
        if self.filter is None:
            return rows
        kept = [row for row in rows
                if self.filter.matches(row.get("attributes") or json.loads(row["attributes_json"]))]
        self.filtered_count += len(rows) - len(kept)
        return kept

    def progress(self) -> dict[str, Any]:
        """What the progress payload says about it (app.polling.progress_payload's `local_filter`)."""
        return {"expression": self.expression, "applied": self.filter is not None,
                "filtered_count": self.filtered_count, "problem": self.problem}
