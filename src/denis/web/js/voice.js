// Voice: the browser's speech recognition (where it has one) turns speech into a chat message;
// a reply to a spoken message is played from its `audio_url`, or read by the browser's speech
// synthesis when the server has no audio (or the audio fails to play). `#voice-state` shows
// idle / listening / thinking / speaking. Without recognition the mic button says so and stays
// disabled; nothing here can block typing. The time from the end of speech to the start of the
// answer is recorded as a "voice" telemetry event (the server counts slow ones: voice.latency).

const STATES = {
  idle: "Idle",
  listening: "Listening…",
  thinking: "Thinking…",
  speaking: "Speaking…",
};

export class Voice {
  constructor({ button, stateLabel, telemetry, onTranscript, timeoutMs }) {
    this.button = button;
    this.stateLabel = stateLabel;
    this.telemetry = telemetry;
    this.onTranscript = onTranscript;
    this.timeoutMs = timeoutMs;
    this.waiting = new Map(); // message id → when the speech ended
    this.audio = null;
    const Recognition = window.SpeechRecognition || window.webkitSpeechRecognition;
    this.recognition = Recognition ? new Recognition() : null;
    this.setState("idle");
    if (!this.recognition) {
      button.disabled = true;
      button.title = "Speech recognition isn't available in this browser";
      return;
    }
    this.recognition.interimResults = false;
    this.recognition.maxAlternatives = 1;
    this.recognition.addEventListener("result", (event) => this.onResult(event));
    this.recognition.addEventListener("error", () => this.setState("idle"));
    this.recognition.addEventListener("end", () => {
      if (this.state === "listening") this.setState("idle");
    });
    button.addEventListener("click", () => this.toggle());
  }

  toggle() {
    if (this.state === "listening") {
      this.recognition.stop();
      this.setState("idle");
      return;
    }
    this.stopSpeaking();
    try {
      this.recognition.lang = document.documentElement.lang || navigator.language || "en";
      this.recognition.start();
      this.setState("listening");
    } catch {
      this.setState("idle");
    }
  }

  onResult(event) {
    const result = event.results[event.results.length - 1];
    const transcript = result && result[0] ? result[0].transcript.trim() : "";
    if (!transcript) {
      this.setState("idle");
      return;
    }
    const item = this.onTranscript(transcript);
    this.waiting.set(item.id, Date.now());
    this.setState("thinking");
    setTimeout(() => {
      if (this.waiting.delete(item.id) && this.state === "thinking") this.setState("idle");
    }, this.timeoutMs);
  }

  /** Call with every reply; speaks only replies to spoken messages. */
  onReply(item, body) {
    const endedAt = item ? this.waiting.get(item.id) : undefined;
    if (endedAt === undefined) return;
    this.waiting.delete(item.id);
    this.telemetry.record("voice", { value: Date.now() - endedAt, detail: "answer" });
    if (typeof body.audio_url === "string" && body.audio_url.startsWith("/")) {
      this.play(body.audio_url, body.reply);
    } else {
      this.speak(body.reply, body.lang);
    }
  }

  onFailure(item) {
    if (item && this.waiting.delete(item.id)) this.setState("idle");
  }

  play(url, fallbackText) {
    this.stopSpeaking();
    const audio = new Audio(url);
    this.audio = audio;
    let fellBack = false;
    const fallBack = () => {
      if (fellBack || this.audio !== audio) return;
      fellBack = true;
      this.audio = null;
      this.speak(fallbackText);
    };
    audio.addEventListener("ended", () => this.setState("idle"));
    audio.addEventListener("error", fallBack);
    this.setState("speaking");
    audio.play().catch(fallBack);
  }

  speak(text, lang) {
    if (!("speechSynthesis" in window) || !text) {
      this.setState("idle");
      return;
    }
    const utterance = new SpeechSynthesisUtterance(text);
    if (lang) utterance.lang = lang;
    utterance.addEventListener("end", () => this.setState("idle"));
    utterance.addEventListener("error", () => this.setState("idle"));
    this.setState("speaking");
    window.speechSynthesis.speak(utterance);
  }

  stopSpeaking() {
    if (this.audio) {
      this.audio.pause();
      this.audio = null;
    }
    if ("speechSynthesis" in window) window.speechSynthesis.cancel();
  }

  setState(state) {
    this.state = state;
    this.stateLabel.textContent = STATES[state];
    this.stateLabel.dataset.state = state;
    this.button.setAttribute("aria-pressed", String(state === "listening"));
  }
}
