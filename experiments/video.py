"""Videos of evaluation episodes: MP4s drawn headless with MuJoCo's own renderer.

What is drawn. `Recorder` rides along an evaluation (experiments/loops/evaluation.py): on host envs (dm_control,
gymnasium) it draws the env instances of each lane's first `episodes` episodes before every step
(`evaluate_host`'s `on_step`); on MJX envs the evaluation returns what drawing needs at every step of those
episodes (positions, velocities, mocap, applied forces: envs/mjx.py's `render_state`) and the frames are drawn
afterwards from the MuJoCo model, as Playground's own `render_array` does. One frame per agent step, the state
the agent acted on; so the video of an episode has as many frames as the episode has steps. Camera: the task's
first camera (dm_control's suite and its Playground ports have a fixed or tracking one per task), else the free
camera (gymnasium: with the env's default camera settings).

Headless rendering. MuJoCo picks its OpenGL backend from MUJOCO_GL when `mujoco` is first imported. Without a
display, `egl` works: Mesa's libEGL renders on the CPU (Debian: libegl1 and libegl-mesa0; on a GPU machine the
driver's EGL). `osmesa` needs libOSMesa (Debian: libosmesa6), which our machines lack; `glfw` (the default)
needs a display. `configure_headless()` sets MUJOCO_GL=egl where it is unset and there is no display; the entry
points call it first thing, and only when a video is asked for (dm_control refuses to import where the backend
it is told to use is missing, which must not stop a run that draws nothing). `check_available()` draws one tiny
scene and writes nothing, so a machine that cannot render fails with one clear message before any work.

MP4. imageio's ffmpeg writer (the `video` extra: `pip install -e '.[video]'`, which brings imageio-ffmpeg and
its own ffmpeg binary; the test extra includes it), H.264 in yuv420p: plays in browsers and common players.
Each file is written under a temporary name and renamed once complete.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


class VideoError(RuntimeError):
    """Videos cannot be made here or of this env: the message says why and what would help."""


def configure_headless() -> str | None:
    """On Linux without a display, make MuJoCo render with EGL (MUJOCO_GL=egl) unless MUJOCO_GL is set; a no-op
    once `mujoco` is imported (its backend is then chosen). Returns the backend MUJOCO_GL names (None: unset)."""
    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless and "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules:
        os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL")


def check_available() -> None:
    """VideoError unless MP4s can be written (imageio-ffmpeg) and MuJoCo can draw here (a 16 x 16 test frame)."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise VideoError(f"videos are written with imageio-ffmpeg, which is not usable here ({error}): "
                         "pip install -e '.[video]'") from None
    import mujoco

    backend = os.environ.get("MUJOCO_GL") or "unset, so glfw, which needs a display"
    try:
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 16, 16)
        renderer.update_scene(mujoco.MjData(model))
        renderer.render()
        renderer.close()
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise VideoError(f"MuJoCo cannot render here (MUJOCO_GL={backend}: {reason}). Without a display, "
                         "MUJOCO_GL=egl works with Mesa's libEGL (Debian: libegl1 libegl-mesa0), MUJOCO_GL=osmesa "
                         "with libOSMesa (libosmesa6); set it before the program starts") from None


def check_env(env_id: str, env=None) -> None:
    """VideoError unless episodes of `env_id` can be drawn: dm_control, gymnasium MuJoCo or MJX (`env`: the
    JaxEnv of a JAX id), one task at a time."""
    import envs as envs_lib
    from envs import multitask

    if multitask.is_multitask(env_id):
        raise VideoError(f"--video draws one task at a time; {env_id} is a multitask env: evaluate one of its tasks "
                         "with --env")
    if envs_lib.is_jax_env(env_id) and not hasattr(env, "render_state"):
        raise VideoError(f"{env_id} cannot be drawn: only MuJoCo envs can (dmc:, gym:, mjx: ids without "
                         "?switch=)")
    instances = getattr(env, "instances", None)
    if instances and not hasattr(instances[0], "scene"):
        # Any gymnasium Box env and a user's registered env run, but only MuJoCo ones say what to draw.
        raise VideoError(f"{env_id} cannot be drawn: only MuJoCo envs can (dmc:, gym: MuJoCo ids, mjx: ids "
                         "without ?switch=)")


def _draw(renderer, data, camera, shadows: bool) -> np.ndarray:
    import mujoco

    renderer.update_scene(data, camera=camera)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = shadows
    return renderer.render().copy()


class Recorder:
    """Draws the first `episodes` episodes of each evaluated lane (`lanes`: their seed indices, for the file
    names) at `width` x `height` pixels; `write(directory)` then saves one MP4 per episode.

    Shadows and reflections are off unless `shadows`: with Mesa's software EGL they cost 20 times the rest of a
    frame (46 ms against 2.3 ms for a 64 x 48 frame of dmc:cartpole-balance, on the loaded 2-core CPU)."""

    def __init__(self, lanes: list[int], episodes: int, width: int, height: int, shadows: bool = False):
        if width % 2 or height % 2 or min(width, height) < 16:
            raise VideoError(f"video size {width} x {height}: width and height must be even and at least 16 "
                             "(H.264 in yuv420p)")
        self.lanes, self.episodes, self.width, self.height = list(lanes), episodes, width, height
        self.shadows = shadows
        self.frames: dict[tuple[int, int], list[np.ndarray]] = {}    # (seed index, episode) -> frames
        self.fps = 30.0
        self._renderers: dict[int, object] = {}

    def _renderer(self, slot: int, model):
        import mujoco

        if slot not in self._renderers:
            # The offscreen buffer must hold the frame (models default to 640 x 480).
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
            self._renderers[slot] = mujoco.Renderer(model, self.height, self.width)
        return self._renderers[slot]

    def host_step(self, env, running: np.ndarray) -> None:
        """`evaluate_host`'s `on_step`: draw each recorded instance that still runs its episode."""
        rows = env.num_envs // len(self.lanes)
        for position, lane in enumerate(self.lanes):
            for episode in range(min(self.episodes, rows)):
                index = position * rows + episode
                if running[index]:
                    scene = env.instances[index].scene()
                    self.fps = scene.fps
                    frame = _draw(self._renderer(index, scene.model), scene.data, scene.camera, self.shadows)
                    self.frames.setdefault((lane, episode), []).append(frame)

    def device_episodes(self, env, drawn: dict, running: np.ndarray) -> None:
        """The evaluation's record of a JAX env (`drawn` {field: [lanes, T, episodes, ...]}, `running` [lanes, T,
        episodes]): draw each step an episode ran, from the env's MuJoCo model."""
        import mujoco

        from envs.core import default_camera

        model = env.render_model
        data, camera, self.fps = mujoco.MjData(model), default_camera(model), env.render_fps
        renderer = self._renderer(-1, model)
        for position, lane in enumerate(self.lanes):
            for episode in range(running.shape[2]):
                for t in np.flatnonzero(running[position, :, episode]):
                    for name, values in drawn.items():
                        getattr(data, name)[...] = values[position, t, episode]
                    mujoco.mj_forward(model, data)
                    self.frames.setdefault((lane, episode), []).append(_draw(renderer, data, camera, self.shadows))

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def write(self, directory: str | os.PathLike) -> list[Path]:
        """One MP4 per recorded episode, `seed<i>_episode<e>.mp4` in `directory` (created)."""
        self.close()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for (lane, episode), frames in sorted(self.frames.items()):
            path = directory / f"seed{lane}_episode{episode}.mp4"
            write_mp4(path, frames, self.fps)
            written.append(path)
        return written


def write_mp4(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> None:
    """H.264 MP4 of `frames` ([height, width, 3] uint8, even sizes) at `fps`, written under a temporary name and
    renamed into place once complete."""
    import warnings

    import imageio.v2 as imageio

    path = Path(path)
    tmp = path.with_name(path.stem + ".partial.mp4")
    try:
        # imageio starts ffmpeg with subprocess, whose fork is followed at once by exec: JAX's warning about
        # forking a multithreaded process does not apply.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
            # macro_block_size=1: the frames keep their size (imageio would pad them to multiples of 16).
            with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                                    macro_block_size=1, ffmpeg_log_level="error") as writer:
                for frame in frames:
                    writer.append_data(frame)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
