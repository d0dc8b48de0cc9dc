"""agent-relay in Python: the relay component in-process (`Relay`) or a served relay (`RelayClient`)."""

from .client import RelayClient
from .relay import Agent, Message, Relay, RelayError

__all__ = ["Agent", "Message", "Relay", "RelayClient", "RelayError"]
