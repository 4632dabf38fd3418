"""README flag strings over the family defaults, as upstream's argparse reads them."""

from __future__ import annotations

import pytest

from guided_diffusion.checkpoint_registry import ADM_DEFAULTS, flags_from_readme


def test_readme_flags_override_defaults_with_upstream_types() -> None:
    flags = flags_from_readme("--class_cond True --num_channels 256 --dropout 0.1 --attention_resolutions 32,16,8",
                              ADM_DEFAULTS)
    assert flags["class_cond"] is True and flags["num_channels"] == 256 and flags["dropout"] == 0.1
    assert flags["attention_resolutions"] == "32,16,8" and flags["num_res_blocks"] == ADM_DEFAULTS["num_res_blocks"]


@pytest.mark.parametrize("bad, match", [("--class_cond maybe", "boolean"), ("--bogus 1", "unknown flag"),
                                        ("--num_channels", "pairs")])
def test_bad_readme_flags_raise(bad: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        flags_from_readme(bad, ADM_DEFAULTS)
