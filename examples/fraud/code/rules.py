"""Rule-based risk notes for a card transaction: the `explain` function endpoint.

Called with the request's JSON object as keyword arguments; returns a JSON object.
Unknown arguments are accepted (and listed), so callers may send a whole transaction.
"""

from __future__ import annotations

from typing import Any

RISKY_CATEGORIES = {"electronics", "jewelry", "travel", "online_retail"}


def explain(
    amount: float,
    merchant_category: str = "grocery",
    hour: int | None = None,
    card_present: bool | None = None,
    distance_from_home: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    reasons: list[str] = []
    points = 0
    if amount >= 1000:
        points += 3
        reasons.append(f"large amount ({amount:.2f})")
    elif amount >= 300:
        points += 1
        reasons.append(f"sizeable amount ({amount:.2f})")
    if merchant_category in RISKY_CATEGORIES:
        points += 1
        reasons.append(f"often-defrauded category ({merchant_category})")
    if hour is not None and (hour <= 5 or hour >= 23):
        points += 1
        reasons.append(f"night-time purchase ({hour}h)")
    if card_present is False:
        points += 1
        reasons.append("card not present")
    if distance_from_home is not None and distance_from_home > 100:
        points += 1
        reasons.append(f"far from home ({distance_from_home:.0f} km)")
    risk = "high" if points >= 4 else "medium" if points >= 2 else "low"
    return {"risk": risk, "points": points, "reasons": reasons, "ignored": sorted(extra)}
