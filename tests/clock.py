"""A clock a test moves by hand, for anything that takes `clock=time.time`: no sleep to
let a window pass, and no flaky edge when the machine is slow."""


class Clock:
    """An injectable time.time: stands at `now` until the test moves it."""

    def __init__(self, now=1_732_700_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds
