"""PLACEHOLDER while the engine is being written."""

class Rollout:  # noqa: D101
    pass


class RolloutHandle:  # noqa: D101
    pass


class RolloutSnapshot:  # noqa: D101
    pass
