// Every error the server can answer (DESIGN.md: {"error": {"code", "detail"}}) and every failure
// the page itself can meet, as a sentence a person understands. The server's `detail` is never
// shown raw: it is written for developers and may be JSON-ish; a code missing from this table
// gets the generic sentence.

const SENTENCES = {
  unauthorized: "Denis doesn't recognise this login token. Enter a valid token to continue.",
  forbidden: "You're not allowed to do that.",
  budget_exceeded: "You've used today's allowance of Denis's thinking. It resets tomorrow.",
  injection_blocked: "Denis didn't act on that message because it looked like an attempt to trick it.",
  timeout: "Denis took too long to answer. Please try again in a moment.",
  too_large: "That message is too long for Denis. Please shorten it (4000 characters at most).",
  invalid_input: "Denis couldn't read that message. Please rephrase it and try again.",
  rate_limited: "You're sending messages faster than Denis can take them.",
  hop_limit: "Denis stopped a request that was going round in circles.",
  unavailable: "Denis is having trouble right now. Please try again in a moment.",
  not_found: "Denis couldn't find what you asked for.",
  internal: "Something went wrong inside Denis. Please try again.",
  // The page's own:
  offline: "Denis can't be reached right now. Your message will be sent when it's back.",
  network: "The connection to Denis failed. Please try again.",
  uncertain:
    "The connection dropped before Denis answered, so it may or may not have received this message.",
  bad_response: "Denis sent an answer the page couldn't understand. Please try again.",
};

const GENERIC = "Something went wrong. Please try again.";

/** A friendly sentence for an error code, with the wait when the server gave one. */
export function friendlyError(code, retryAfterS) {
  let sentence = SENTENCES[code] || GENERIC;
  const wait = Number(retryAfterS);
  if ((code === "rate_limited" || code === "unavailable" || code === "timeout") && wait > 0) {
    const seconds = Math.ceil(wait);
    sentence += ` Try again in ${seconds} second${seconds === 1 ? "" : "s"}.`;
  }
  return sentence;
}

/** The error code inside a server error body, or a stand-in when the body is not one. */
export function errorCode(body, fallback = "bad_response") {
  const code = body && typeof body === "object" && body.error && body.error.code;
  return typeof code === "string" && code ? code : fallback;
}
