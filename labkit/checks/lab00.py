"""Checks of lab 00, the welcome lab."""

import math

from labkit.checks import Fail, call, expect_function, number, register, safe_repr

# Every class of status code, with the codes either side of each boundary: 1xx and 3xx are not errors, 399 is
# not, 400 and 599 are. Every call tests each of them alone and inside mixed lists.
SUCCESS = [100, 101, 103, 199, 200, 201, 202, 204, 299, 301, 302, 304, 307, 308, 399]
ERRORS = [400, 401, 403, 404, 409, 422, 429, 499, 500, 502, 503, 504, 599]
BOUNDARIES = [[], [100], [200], [304], [399], [400], [499], [500], [599]]


@register(
    "00.error_rate",
    points=1,
    title="Error rate from status codes",
    hints=(
        "An error is any response with a code of 400 or above, whether the client's fault (4xx) or the server's "
        "(5xx); every other code, 1xx and 3xx included, is not an error.",
        "Count the codes that are 400 or above, divide by the number of codes, and return 0.0 for the empty "
        "list before you divide.",
        "sum(code >= 400 for code in codes) counts the errors, because True counts as 1; len(codes) is the "
        "number of responses. Return a fraction between 0 and 1, not a percentage.",
    ),
)
def error_rate(answer, rng):
    expect_function(answer, "error_rate", "a list of status codes")
    pool = SUCCESS + ERRORS
    cases = [list(c) for c in BOUNDARIES]
    for _ in range(12):
        codes = [int(c) for c in rng.choice(pool, size=int(rng.integers(2, 40)))]
        codes += [int(rng.choice(SUCCESS)), int(rng.choice(ERRORS))]  # at least one of each
        rng.shuffle(codes)
        cases.append(codes)
    cases.insert(int(rng.integers(len(cases))), [int(c) for c in rng.permutation(pool)])  # every code at once
    for codes in cases:
        expected = sum(c >= 400 for c in codes) / len(codes) if codes else 0.0
        shown = f"error_rate({codes[:8]}{'…' if len(codes) > 8 else ''})"
        got = call(answer, shown, list(codes))
        if isinstance(got, bool):
            raise Fail(f"{shown} returned {got}; return the fraction of errors as a float.")
        value = number(got, f"The result of {shown}")
        if not math.isclose(value, expected, abs_tol=1e-9):
            if math.isclose(value, 100 * expected, abs_tol=1e-6) and expected:
                raise Fail(f"{shown} returned {value:g}, a percentage; return a fraction between 0 and 1.")
            raise Fail(f"For {len(codes)} codes, {shown} returned {safe_repr(got)}; the fraction of codes ≥ 400 "
                       f"is {expected:g}.")
    return (f"Right on {len(cases)} hidden lists of status codes: the empty list, 1xx and 3xx codes, and the "
            "boundaries 399/400 and 599.")
