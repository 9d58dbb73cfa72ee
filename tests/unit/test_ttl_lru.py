"""``TtlLru`` keeps ``cachetools.TTLCache``'s policy (expiry after ``ttl_s``, least recently used
evicted past ``max_keys``): checked against TTLCache itself on random operation sequences."""

from __future__ import annotations

from cachetools import TTLCache
from hypothesis import given, settings
from hypothesis import strategies as st

from denis.resilience import ManualClock
from denis.sync_plane.ttl_lru import TtlLru

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("get"), KEYS),
        st.tuples(st.just("set"), KEYS, st.integers(0, 100)),
        st.tuples(st.just("advance"), st.floats(0.0, 4.0)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, max_keys=st.integers(1, 6))
def test_ttl_lru_behaves_like_cachetools_ttlcache(ops, max_keys) -> None:
    clock = ManualClock()
    ours: TtlLru[str, int] = TtlLru(max_keys=max_keys, ttl_s=5.0)
    oracle: TTLCache[str, int] = TTLCache(maxsize=max_keys, ttl=5.0, timer=clock.now_s)
    for op in ops:
        if op[0] == "get":
            assert ours.get(op[1], clock.now_s()) == oracle.get(op[1])
        elif op[0] == "set":
            ours.set(op[1], op[2], clock.now_s())
            oracle[op[1]] = op[2]
        else:
            clock.advance(op[1])
        assert ours.live_count(clock.now_s()) <= max_keys
    assert ours.live_count(clock.now_s()) == len(oracle)
