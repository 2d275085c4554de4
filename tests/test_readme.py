"""The README's quickstart runs as written (so the first thing a newcomer tries works)."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    exec(compile(blocks[0], "README quickstart", "exec"), {})
    assert capsys.readouterr().out.strip() == "(20, 4, 64) (4, 4, 32) (32, 32)"
