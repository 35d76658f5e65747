"""Type stubs of the native module (crates/membrane-py)."""

from typing import List, Optional, Sequence, Tuple

class MembraneError(Exception):
    """Base class of every error the membrane package raises."""

class Unreachable(MembraneError):
    """A node's control API could not be reached."""

def run_node(config: str) -> None: ...
def node_config(config: str) -> Tuple[str, str, str, str, str]: ...
def write_consortium(dir: str, mode: str = "dealer") -> List[str]: ...
def call(
    addr: str,
    token: Optional[str],
    method: str,
    path: str,
    body: Optional[str] = None,
    timeout: float = 60.0,
) -> Tuple[int, str]: ...
def encode(kind: str, body: str) -> str: ...
def write_heldout(data: str, label: str, test_split: float, seed: int, out: str) -> List[float]: ...
def simulate_predict(
    model: str,
    input: str,
    output: str,
    policy: str = "logits",
    frac_bits: Optional[int] = None,
    nonlinear: Optional[str] = None,
    input_range: Optional[Sequence[float]] = None,
    seed: int = 0,
) -> str: ...
def simulate_train(request: str, seed: int = 0) -> str: ...
def simulate_analyze(request: str, alice_data: Optional[str] = None, seed: int = 0) -> str: ...
