// Reconnect delays: exponential (base, 2×base, 4×base … capped), with jitter so that many pages
// reconnecting after one server restart do not all arrive in the same instant. The jitter only
// ever shortens a delay (to 75–100 % of the step), so the cap is a true maximum; a server's
// close-1013 retry hint is a floor on top of it (the page never comes back sooner than asked).

export const JITTER_LOW = 0.75;

export function backoffDelayMs(attempt, baseMs, capMs, random = Math.random) {
  const step = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(step * (JITTER_LOW + (1 - JITTER_LOW) * random()));
}

/** The retry hint in a 1013 close reason: JSON `{"retry_after_s": N}`; null when absent. */
export function retryHintMs(reason) {
  if (!reason) return null;
  try {
    const seconds = Number(JSON.parse(reason).retry_after_s);
    return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 3600) * 1000 : null;
  } catch {
    const match = /retry_after=(\d+(?:\.\d+)?)/.exec(reason); // tolerate the plain form too
    return match ? Math.min(Number(match[1]), 3600) * 1000 : null;
  }
}
