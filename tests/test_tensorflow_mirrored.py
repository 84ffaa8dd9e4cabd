"""Lesson 06b's claim, checked: MirroredStrategy with 4 logical CPU devices reaches the 1-replica weights."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                       reason="TensorFlow is not installed: pip install -e '.[tensorflow]' to run lesson 06b's tests"),
]

# Runs in a fresh interpreter: logical devices must be configured before TensorFlow initialises,
# which an earlier test in this process might already have done.
_SCRIPT = r"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tensorflow as tf
tf.get_logger().setLevel("ERROR")
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
import keras

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 8)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int64")

def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)])

initial = build().get_weights()

def run(devices, batch=32):
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        m = build()
        m.set_weights(initial)
        m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch), epochs=2, verbose=0, shuffle=False)
    return strategy.num_replicas_in_sync, m.get_weights()

devices = [d.name for d in tf.config.list_logical_devices("CPU")]
n1, w1 = run(devices[:1])
n4, w4 = run(devices)
print("REPLICAS", n1, n4)
print("DIFF", max(float(np.abs(a - b).max()) for a, b in zip(w1, w4)))
print("MOVED", max(float(np.abs(a - b).max()) for a, b in zip(w1, initial)))
"""


def test_four_mirrored_replicas_match_one():
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"TensorFlow run timed out:\n{out[-2000:]}")
    assert proc.returncode == 0, out[-3000:]
    values = {line.split()[0]: line.split()[1:] for line in out.splitlines()
              if line.split()[:1] and line.split()[0].isupper()}
    assert values["REPLICAS"] == ["1", "4"]
    assert float(values["DIFF"][0]) < 1e-5
    assert float(values["MOVED"][0]) > 1e-2  # training happened, so the agreement means something


def test_lesson_source_configures_devices_before_use():
    from pathlib import Path

    src = (Path(__file__).resolve().parent.parent / "tools" / "nbsrc" / "lessons"
           / "06b_tensorflow_mirrored.py").read_text()
    assert src.index("set_logical_device_configuration(cpu") < src.index("tf.distribute.MirroredStrategy(DEVICES")
