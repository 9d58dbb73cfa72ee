// The login token: taken from the URL fragment (#token=..., which `make run` prints and which a
// browser never sends to a server), kept in localStorage, and removed from the address bar at
// once so it is not bookmarked, shared in a screenshot or left in the history. Without
// localStorage (private modes may refuse it) the token lives in memory for this page only.

const KEY = "denis.token";
let memoryToken = null;

export function adoptFragmentToken(location = window.location, history = window.history) {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (location.hash) {
    // Drop the whole fragment (it may hold nothing else of use), keep path and query.
    history.replaceState(history.state, "", location.pathname + location.search);
  }
  if (token && token.trim()) saveToken(token.trim());
}

export function getToken() {
  try {
    return window.localStorage.getItem(KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

export function saveToken(token) {
  memoryToken = token;
  try {
    window.localStorage.setItem(KEY, token);
  } catch {
    // Storage refused: the in-memory copy serves this page.
  }
}

export function forgetToken() {
  memoryToken = null;
  try {
    window.localStorage.removeItem(KEY);
  } catch {
    // Nothing stored.
  }
}
