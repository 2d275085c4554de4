"""Progress on stderr while the bench runs (stdout carries only the report, so it can be piped).

tqdm's bar when tqdm is installed (the [bench] extra), else a counter rewritten in place.
"""
import sys


class PlainProgress:
    def __init__(self, total, desc="bench"):
        self.total, self.done, self.desc = total, 0, desc

    def update(self, n):
        self.done += n
        print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def set_description(self, desc):
        self.desc = desc

    def close(self):
        print(file=sys.stderr)


class SilentProgress(PlainProgress):
    """``--no-progress``."""

    def update(self, n):
        self.done += n

    def close(self):
        pass


def progress_bar(total, enabled):
    if not enabled:
        return SilentProgress(total)
    try:
        from tqdm import tqdm
    except ImportError:
        return PlainProgress(total)
    return tqdm(total=total, desc="bench", unit="turn", file=sys.stderr)
