"""Checks of lab 00, the welcome lab."""

import math

from labkit.checks import Fail, expect_function, register, safe_repr

STATUS_CODES = [200, 200, 200, 201, 204, 400, 404, 422, 500, 503]


@register(
    "00.error_rate",
    points=1,
    title="Error rate from status codes",
    hint="Count the codes that are 400 or above, divide by the number of codes, and handle the empty list first.",
)
def error_rate(answer, rng):
    expect_function(answer, "error_rate", "a list of status codes")
    cases = [[], [200], [503]]
    cases += [list(rng.choice(STATUS_CODES, size=int(rng.integers(1, 40)))) for _ in range(20)]
    for codes in cases:
        codes = [int(c) for c in codes]
        expected = sum(c >= 400 for c in codes) / len(codes) if codes else 0.0
        got = answer(list(codes))
        try:
            value = float(got)
        except (TypeError, ValueError):
            raise Fail(f"error_rate({codes[:6]}{'…' if len(codes) > 6 else ''}) returned {safe_repr(got)}, "
                       "not a number.") from None
        if not math.isclose(value, expected, abs_tol=1e-9):
            shown = f"{codes[:8]}{'…' if len(codes) > 8 else ''} ({len(codes)} codes)"
            raise Fail(f"For {shown} you returned {value:g}; that is not the fraction of codes ≥ 400.")
    return f"Right on {len(cases)} hidden lists of status codes, the empty list included."
