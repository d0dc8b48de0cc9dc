"""agent-relay in Python: the relay component in-process (`Relay`) or a served relay (`RelayClient`)."""

from .client import RelayClient
from .relay import Agent, Clock, Message, Relay, RelayError

__all__ = ["Agent", "Clock", "Message", "Relay", "RelayClient", "RelayError"]
