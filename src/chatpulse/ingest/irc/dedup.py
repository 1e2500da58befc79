"""A bounded set of recently seen message keys, to drop duplicates across a reconnect overlap."""

from collections import deque

__all__ = ["RecentKeys"]


class RecentKeys:
    """Remembers the last ``capacity`` keys; ``seen(key)`` is True for a repeat."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._order: deque[object] = deque()
        self._keys: set[object] = set()

    def seen(self, key: object) -> bool:
        """True when ``key`` was added before (and is still remembered); else remember it."""
        if key in self._keys:
            return True
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._keys.discard(self._order.popleft())
        return False

    def __len__(self) -> int:
        return len(self._keys)
