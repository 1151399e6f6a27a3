"""`train ivs --set FIELD=VALUE`: a config field changed from the command line, errors naming --set."""
from __future__ import annotations

import pytest

from patchprune.cli import main


def _parser_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_set_rejects_unknown_fields_and_missing_values(capsys, tmp_path) -> None:
    base = ["train", "ivs", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    err = _parser_error(capsys, [*base, "--set", "bogus=1"])
    assert "--set" in err and "bogus" in err and "vision_patch" in err
    err = _parser_error(capsys, [*base, "--set", "vision_patch"])
    assert "--set" in err and "FIELD=VALUE" in err


def test_config_field_values_are_read_as_json() -> None:
    from patchprune.ivs.commands import _config_field

    assert _config_field("vision_patch=4") == ("vision_patch", 4)
    assert _config_field("vision_patch=null") == ("vision_patch", None)
    assert _config_field("instruction_prefix=true") == ("instruction_prefix", True)
    assert _config_field(" llm =phi") == ("llm", "phi")


def test_set_reaches_the_trained_config_and_a_resume_must_repeat_it(tmp_path, capsys) -> None:
    """A one-step micro run with --set: its saved config carries the field and the tower's grid;
    resumed without the --set, one line naming the field and its two values."""
    from patchprune.data.synth_refer import write_synth_refer
    from patchprune.ivs.config import IVSConfig

    data = tmp_path / "data"
    write_synth_refer(data, images=4, videos=0, size=64, seed=2, progress=False, min_objects=2, max_objects=2,
                      min_distractors=0, max_distractors=1, min_radius=0.2, max_radius=0.3)
    out = tmp_path / "run"
    base = ["train", "ivs", "--data", str(data), "--out", str(out), "--config", "micro", "--steps", "1",
            "--batch", "2", "--threads", "1", "--no-progress"]
    assert main([*base, "--set", "vision_patch=8"]) == 0
    cfg = IVSConfig.load(out)
    assert cfg.vision_patch == 8 and cfg.grid == (8, 8) and cfg.patch_size == 16
    capsys.readouterr()
    assert main([*base, "--steps", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vision_patch: 8 -> None" in err and "--set" in err
