/**
 * The delay before reconnect attempt `n` (1, 2, 3, ... since the last connection that
 * stayed up for 10 s): uniformly random in `[min, min(max, min * 2^n)]` — full jitter over an
 * exponentially growing window whose floor is `min`, so no attempt comes sooner than
 * `min` and the waits of many clients stay spread out.
 */
export function backoff(n: number, min: number, max: number, rand: () => number = Math.random): number {
  const lo = Math.min(min, max);
  const hi = Math.max(lo, Math.min(max, min * Math.pow(2, Math.min(n, 30))));
  return Math.round(lo + rand() * (hi - lo));
}

/** Reads `exp` (unix seconds) from a JWT's payload without verifying it; `undefined` if unreadable. */
export function jwtExp(token: string): number | undefined {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4))).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}
