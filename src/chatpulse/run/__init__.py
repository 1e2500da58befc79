"""``chatpulse up``: runs the stack, init, fake-twitch, ingest, processor and API together."""

from chatpulse.run.plan import Plan, UpOptions, build_plan
from chatpulse.run.supervisor import ChildSpec, Supervisor

__all__ = ["ChildSpec", "Plan", "Supervisor", "UpOptions", "build_plan"]
