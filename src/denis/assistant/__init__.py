"""The assistant: what turns a user's words into an answer once the gates let them through.

Owns: intent recognition (``hassil`` with ``home-assistant-intents``, English and Spanish),
the home backends (the built-in demo home, Home Assistant over REST), the tools that read and
change the home (run as jobs on ``tools_ro`` / ``tools_mut``), the optional OpenAI-compatible
LLM, voice out (espeak-ng on ``tts``, playback on ``ha_playback``) and the short conversation
history that makes follow-ups work.
Depends on: ``denis.sync_plane`` (the ``Responder`` it implements), ``denis.graph`` (routes,
policies, the home's names), ``denis.async_plane`` (the job registry and dispatcher);
Home Assistant, the LLM and espeak-ng (all optional, all behind timeouts and breakers).
Degrades: Home Assistant down or hung → an honest "I can't reach your home" (``home``); the LLM
down → intents only (``llm``); TTS slow or missing → the text reply without audio (``voice``).
Emits: ``voice.latency``, breaker transitions for ``home_assistant`` and ``llm``.
"""
