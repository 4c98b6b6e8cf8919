from __future__ import annotations

from pathlib import Path

import pytest

from privacy_finetuner.config import JobConfig, dump_config, load_config
from privacy_finetuner.errors import ConfigError, NotFoundError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVACY_CONFIG", raising=False)
    config = load_config()
    assert isinstance(config, JobConfig)
    assert config.privacy.target_epsilon == 8.0
    assert config.model.method == "full"  # tiny model: auto → full


def test_bad_value_names_path_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  max_length: 128\nprivacy:\n  target_epsilon: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:4: privacy.target_epsilon: must be greater than 0")


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "privacy:\n  target_epsillon: 3\n")
    with pytest.raises(ConfigError, match=r"job.yaml:2: privacy.target_epsillon: unknown key"):
        load_config(path)


def test_unknown_section_and_bad_literal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trainng: unknown key"):
        load_config(_write(tmp_path, "trainng: {}\n"))
    with pytest.raises(ConfigError, match=r"privacy\.privacy_unit"):
        load_config(_write(tmp_path, "privacy:\n  privacy_unit: household\n"))


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"job\.yaml:"):
        load_config(_write(tmp_path, "privacy: [unclosed\n"))
    with pytest.raises(NotFoundError):
        load_config(tmp_path / "nope.yaml")


def test_env_var_default_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "privacy:\n  target_epsilon: 3\n  delta: 1.0e-6\n")
    monkeypatch.setenv("PRIVACY_CONFIG", str(path))
    assert load_config().privacy.target_epsilon == 3
    config = load_config(overrides={"privacy.target_epsilon": 5, "training": {"seed": 7}})
    assert config.privacy.target_epsilon == 5
    assert config.privacy.delta == 1e-6
    assert config.training.seed == 7


def test_override_errors_have_paths() -> None:
    with pytest.raises(ConfigError, match=r"^privacy.delta: must be less than 1"):
        load_config(None, {"privacy.delta": 2})
    with pytest.raises(ConfigError, match="set target_epsilon or noise_multiplier"):
        load_config(None, {"privacy.target_epsilon": None})


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load_config(None, {"data.path": str(tmp_path / "x.jsonl")})
    path = _write(tmp_path, dump_config(config))
    assert load_config(path) == config


def test_plan_spends_the_target_epsilon_and_computes_it_on_demand() -> None:
    """The plan's σ spends at most the target ε over its steps (checked with dp-accounting
    through compute_epsilon), and ε is only computed when asked for."""
    from privacy_finetuner.accounting import DpSegment, compute_epsilon
    from privacy_finetuner.config import load_config
    from privacy_finetuner.config.planning import plan_privacy

    config = load_config(
        None,
        {
            "training": {"max_steps": 40, "batch_size": 20},
            "privacy": {"target_epsilon": 3.0, "delta": 1e-5},
        },
    )
    plan = plan_privacy(config, num_units=1000)
    assert plan.sample_rate == 20 / 1000 and plan.steps == 40
    assert "expected_epsilon" not in vars(plan)
    reference = compute_epsilon(
        [DpSegment(noise_multiplier=plan.noise_multiplier, sample_rate=0.02, steps=40)],
        delta=1e-5,
    )
    assert plan.expected_epsilon == reference
    assert 3.0 * (1 - 2e-3) <= reference <= 3.0


def test_the_example_file_is_the_embedded_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/support-agent.yaml promises `train --example support-agent`: same job."""
    from privacy_finetuner.training.examples import example_overrides

    monkeypatch.delenv("PRIVACY_CONFIG", raising=False)
    path = Path(__file__).resolve().parents[2] / "examples" / "support-agent.yaml"
    from_file = load_config(path).model_dump(mode="json")
    embedded = load_config(None, example_overrides("support-agent")).model_dump(mode="json")
    assert from_file == embedded


def test_relative_paths_resolve_against_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "models" / "mine").mkdir(parents=True)
    path = jobs / "job.yaml"
    path.write_text(
        "data:\n  path: traces.jsonl\n  validation_path: ../held/out.jsonl\n"
        "output:\n  dir: runs/a\nmodel:\n  name: models/mine\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert config.data.path == jobs / "traces.jsonl"
    assert config.data.validation_path == tmp_path / "held" / "out.jsonl"
    assert config.output.dir == jobs / "runs" / "a"
    assert config.model.name == str(jobs / "models" / "mine")
    # A hub id is not a path, and an override is relative to the working directory.
    hub = load_config(path, {"model.name": "org/model", "data.path": "other.jsonl"})
    assert hub.model.name == "org/model"
    assert hub.data.path == tmp_path / "other.jsonl"


def test_saved_config_reads_back_identical_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {"data.path": "traces.jsonl"})
    saved = tmp_path / "run" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(dump_config(config), encoding="utf-8")
    monkeypatch.chdir(saved.parent)
    assert load_config(saved) == config


def test_override_errors_do_not_blame_a_line_of_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "privacy:\n  delta: 1.0e-6\n  target_epsilon: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"privacy.delta": 2})
    message = str(info.value)
    assert "job.yaml" not in message
    assert message.startswith("privacy.delta: must be less than 1")
    assert "flag or override" in message
    with pytest.raises(ConfigError, match=r"job\.yaml:3: privacy\.target_epsilon"):
        load_config(_write(tmp_path, "privacy:\n  delta: 1.0e-6\n  target_epsilon: -3\n"))


def test_plan_raises_a_large_delta_as_a_privacy_warning() -> None:
    from privacy_finetuner.config.planning import plan_privacy
    from privacy_finetuner.errors import PrivacyWarning

    config = load_config(
        None,
        {"privacy.delta": 0.5, "training.max_steps": 5, "privacy.noise_multiplier": 1.0,
         "privacy.target_epsilon": None},
    )  # fmt: skip
    with pytest.warns(PrivacyWarning, match=r"delta=0\.5 is larger than 1/n"):
        plan = plan_privacy(config, num_units=100)
    assert any("1/n" in note for note in plan.warnings)  # and the report still carries it
