"""README.md is a user page: at most 150 lines, the two commands first, the version history of the code, links that
resolve."""
from __future__ import annotations

import re
from pathlib import Path

import rlasc_env

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_short_and_opens_with_the_two_commands():
    assert len(README.splitlines()) <= 150
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert blocks[0].endswith("pip install -e . && python train_agent.py --algo reinforce")
    assert blocks[1].endswith('pip install -e ".[dev]" && python -m pytest -q')
    assert README.index("<!-- test-command -->") < README.index(blocks[1])
    assert "__" not in README  # no placeholder left


def test_version_history_matches_the_registered_ids():
    assert rlasc_env.version_history() in README
    doc = rlasc_env.SemanticCodingEnv.__doc__
    for env_id in rlasc_env.CARDS:
        assert env_id in doc, env_id


def test_quick_use_names_only_the_current_id():
    quick = README[README.index("## Quick use"):README.index("## Environment card")]
    assert set(re.findall(r"rlasc/SemanticCoding-v\d", quick)) == {rlasc_env.CURRENT_ID}


def test_relative_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
