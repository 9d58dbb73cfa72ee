// HTTP with a deadline on every request (AbortController) so a hung server never leaves the
// page waiting. Results are plain objects, never thrown: {ok, status, body, retryAfterS} or
// {ok: false, status: 0, code: "network" | "timeout"} when no answer arrived at all.

export async function requestJson(url, { method = "GET", token, body, timeoutMs }) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
    let parsed = null;
    if (response.status !== 204) {
      try {
        parsed = await response.json();
      } catch {
        parsed = null; // not JSON: the caller gets a "bad_response"
      }
    }
    const retry = Number(response.headers.get("Retry-After"));
    return {
      ok: response.ok,
      status: response.status,
      body: parsed,
      retryAfterS: Number.isFinite(retry) && retry > 0 ? retry : null,
    };
  } catch (error) {
    const timedOut = controller.signal.aborted;
    return { ok: false, status: 0, body: null, code: timedOut ? "timeout" : "network" };
  } finally {
    clearTimeout(timer);
  }
}
