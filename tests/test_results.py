"""What a run leaves to look at: test-episode videos (run dir and MLflow) and the Comet mirror (offline only)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from experiment.cli import register_resolvers
from experiment.train import train
from experiment.validation import validate_config
from interface.algorithms import get_algorithm
from interface.envs import make_vec_env
from tests.conftest import CONF_DIR, TINY
from tests.test_train import CONTRACT_METRICS
from util.comet_logger import CometMirror, offline_archives, upload_offline_archive
from util.errors import ConfigError
from util.video import TestEpisodeRecorder, select_gl_backend

SECRET = "not-a-real-key-0123456789abcdef"


@dataclass
class RecordedRun:
    """A finished 1-epoch run with render_test=record and an offline Comet mirror."""

    run_dir: Path
    run_id: str
    client: MlflowClient


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory, tracking_uri: str) -> RecordedRun:
    """Train FetchReach for one epoch while an API key is in the environment (which offline mode must not log)."""
    register_resolvers()
    base = tmp_path_factory.mktemp("results")
    overrides = [*TINY, "n_epochs=1", "render_test=record", "render_freq=5", "comet.mode=offline"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("main", overrides=[f"base_logdir={base}", f"mlflow.tracking_uri={tracking_uri}", *overrides])
    run_dir = base / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMET_API_KEY", SECRET)
        train(cfg, run_dir)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.mlflow.experiment_name).experiment_id],
        filter_string=f"tags.run_dir = '{run_dir.resolve()}'",
    )
    return RecordedRun(run_dir, runs[0].info.run_id, client)


def _read_frames(path: Path) -> list[np.ndarray]:
    with imageio.get_reader(path) as reader:
        return [frame for frame in reader]  # list() asks the reader for a length it reports as infinite


def test_last_epoch_video_has_one_frame_per_step_plus_reset(recorded_run: RecordedRun) -> None:
    videos = sorted((recorded_run.run_dir / "videos").iterdir())
    assert [p.name for p in videos] == ["test_step_00000200.gif", "test_step_00000200.mp4"]
    frames = _read_frames(videos[1])
    episode_length = recorded_run.client.get_metric_history(recorded_run.run_id, "test/ep_length")[0].value
    assert len(frames) == int(episode_length) + 1  # the reset frame and one per step
    assert frames[0].shape == (240, 240, 3)
    assert all(frame.std() > 10 for frame in frames), "a blank frame"
    assert len(_read_frames(videos[0])) == (len(frames) + 1) // 2  # the GIF keeps every second frame


def test_video_is_an_mlflow_artifact(recorded_run: RecordedRun, tmp_path: Path) -> None:
    artifacts = {a.path for a in recorded_run.client.list_artifacts(recorded_run.run_id, "videos")}
    assert artifacts == {"videos/test_step_00000200.mp4", "videos/test_step_00000200.gif"}
    name = "videos/test_step_00000200.mp4"
    local = recorded_run.client.download_artifacts(recorded_run.run_id, name, str(tmp_path))
    assert len(_read_frames(Path(local))) == len(_read_frames(recorded_run.run_dir / name))


def _comet_messages(run_dir: Path) -> list[dict]:
    archives = list((run_dir / "comet").glob("*.zip"))
    assert len(archives) == 1
    with zipfile.ZipFile(archives[0]) as archive:
        lines = archive.read("messages.json").decode().splitlines()
    return [json.loads(line) for line in lines if line]


def test_offline_comet_archive_mirrors_metrics_params_tags_and_video(recorded_run: RecordedRun) -> None:
    messages = _comet_messages(recorded_run.run_dir)
    metrics = {
        (m["payload"]["metric"]["metricName"], m["payload"]["metric"]["step"]): m["payload"]["metric"]["metricValue"]
        for m in messages
        if m["type"] == "metric_msg"
    }
    for name in CONTRACT_METRICS:
        mlflow_points = recorded_run.client.get_metric_history(recorded_run.run_id, name)
        assert [(name, p.step) for p in mlflow_points] == [(name, 200)]
        assert metrics[(name, 200)] == pytest.approx(mlflow_points[0].value)
    params = {}
    for message in messages:
        if message["type"] == "parameter_msg":
            param = message["payload"].get("param") or message["payload"]["params"]  # "params" for list values
            if param["source"] == "manual":
                params[param["paramName"]] = param["paramValue"]
    assert params["render_test"] == "record" and params["algorithm.model_class"] == "sac"
    assert params["algorithm.learner.policy_kwargs.net_arch"] == [64, 64]
    others = {m["payload"]["key"]: m["payload"]["value"] for m in messages if m["type"] == "log_other"}
    assert others["env"] == "FetchReach-v4" and others["algorithm"] == "her" and others["status"] == "FINISHED"
    uploads = {
        m["payload"]["additional_params"]["fileName"]: m["payload"]["upload_type"]
        for m in messages
        if m["type"] == "file_upload"
    }
    assert uploads["videos/test_step_00000200.mp4"] == "video"
    assert uploads["videos/test_step_00000200.gif"] == "asset"


def test_api_key_never_written(recorded_run: RecordedRun) -> None:
    for path in recorded_run.run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".zip", ".log", ".yaml", ".json"):
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as archive:
                    contents = b"".join(archive.read(name) for name in archive.namelist())
            else:
                contents = path.read_bytes()
            assert SECRET.encode() not in contents, path
    params = recorded_run.client.get_run(recorded_run.run_id).data.params
    assert not any(SECRET in value for value in params.values())


def test_auto_mode_without_key_writes_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.comet.config
    mirror = CometMirror.open("auto", tmp_path, "project", "run", {"env": "E"})
    assert mirror is not None and mirror.offline_directory == tmp_path / "comet"
    mirror.log_metric_entries([("test/success_rate", 0.5, 100)])
    mirror.end("FINISHED")
    assert len(list((tmp_path / "comet").glob("*.zip"))) == 1
    assert CometMirror.open("off", tmp_path, "project", "run", {}) is None


class _BrokenExperiment:
    """Stands in for a Comet experiment whose every call fails, like an upload to an unreachable server."""

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> None:
            raise ConnectionError("upload failed")

        return fail


def test_failing_comet_turns_the_mirror_off_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    mirror = CometMirror(_BrokenExperiment(), None)
    mirror.log_metric_entries([("test/success_rate", 1.0, 10)])
    mirror.log_params({"seed": 0})
    mirror.end("FINISHED")
    assert mirror.experiment is None
    assert sum("Comet mirror off" in r.message for r in caplog.records) == 1


def test_display_without_a_screen_is_one_clear_config_error(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg("render_test=display"))
    assert error.value.key == "render_test"
    assert "\n" not in str(error.value) and "render_test=record" in str(error.value)


@pytest.mark.parametrize(
    ("epoch", "last_epoch", "due"), [(1, False, False), (3, False, True), (4, False, False), (4, True, True)]
)
def test_recording_every_render_freq_epochs_and_after_the_last(epoch: int, last_epoch: bool, due: bool) -> None:
    recorder = TestEpisodeRecorder(gym.make("CartPole-v1", render_mode="rgb_array"), "record", 3, seed=0)
    assert recorder.due(epoch, last_epoch) is due
    recorder.close()


def test_offline_archives_are_found_and_a_failed_upload_is_reported_not_raised(tmp_path: Path) -> None:
    archive = tmp_path / "0" / "comet" / "abc.zip"
    archive.parent.mkdir(parents=True)
    archive.write_text("not a zip")
    (tmp_path / "0" / "other.zip").write_text("")
    assert offline_archives(tmp_path) == [archive]
    assert upload_offline_archive(archive, timeout=120) is False


def test_subgoal_markers_of_a_real_hierarchy_are_drawn_into_the_next_frame_only(make_cfg) -> None:
    select_gl_backend("record")
    cfg = make_cfg("algorithm=hac", "algorithm.time_scales=[5,-1]")
    hac = get_algorithm("hac").build(cfg.algorithm, make_vec_env("FetchReach-v4", {}, 0), 0, "cpu")
    env = gym.make("FetchReach-v4", render_mode="rgb_array", width=96, height=96)
    recorder = TestEpisodeRecorder(env, "record", render_freq=1, seed=0)
    try:
        observation, _ = env.reset(seed=0)
        plain = np.asarray(env.render()).copy()
        # The hierarchy picks its subgoal for this observation, as it does when the recorder asks for an action.
        hac.predict(observation, episode_start=np.ones(1, dtype=bool), deterministic=True)
        assert len(hac.current_subgoals()) == 2
        recorder.mark_subgoals(hac)
        marked = np.asarray(env.render()).copy()
        again = np.asarray(env.render())
    finally:
        recorder.close()
    changed = np.abs(marked.astype(int) - plain.astype(int)).sum(axis=-1) > 30
    assert 0 < changed.sum() < changed.size // 4  # a small sphere appeared ...
    assert (marked[changed][:, 0].astype(int) > marked[changed][:, 2].astype(int)).mean() > 0.5  # ... orange
    np.testing.assert_array_equal(again, plain)  # markers last one frame
