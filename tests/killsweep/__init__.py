"""Helpers of the kill sweep (tests/test_kill_sweep.py): balancer daemon, router, controller."""
