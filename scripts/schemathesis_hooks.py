"""Schemathesis hooks for Weft's API, loaded by scripts/schemathesis.sh.

Schemathesis cannot make up `application/wasm` bodies by itself: give it real
example components (built by `cargo build` into components/target) and some
random bytes, so that publishing is tested both when it succeeds and when
the bytes are not a component.
"""

from pathlib import Path

import schemathesis
from hypothesis import strategies as st

_BUILT = Path(__file__).resolve().parent.parent / "components/target/wasm32-wasip2/release"
_COMPONENTS = [
    (_BUILT / f"{name}.wasm").read_bytes()
    for name in ("echo", "noop")
    if (_BUILT / f"{name}.wasm").is_file()
]

_random = st.binary(max_size=512)
schemathesis.openapi.media_type(
    "application/wasm",
    st.one_of(st.sampled_from(_COMPONENTS), _random) if _COMPONENTS else _random,
)
